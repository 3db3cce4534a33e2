import { append, el } from "../dom";

export async function compareView(main: HTMLElement): Promise<void> {
  append(main, el("h2", {}, "compare"), el("p", {}, "Coming soon."));
}
