import { append, el } from "../dom";

export async function modelView(main: HTMLElement): Promise<void> {
  append(main, el("h2", {}, "model"), el("p", {}, "Coming soon."));
}
