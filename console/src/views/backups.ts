import { append, el } from "../dom";

export async function backupsView(main: HTMLElement): Promise<void> {
  append(main, el("h2", {}, "backups"), el("p", {}, "Coming soon."));
}
