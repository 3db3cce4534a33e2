import { append, el } from "../dom";

export async function adminView(main: HTMLElement): Promise<void> {
  append(main, el("h2", {}, "admin"), el("p", {}, "Coming soon."));
}
