import { append, el } from "../dom";

export async function sharingView(main: HTMLElement): Promise<void> {
  append(main, el("h2", {}, "sharing"), el("p", {}, "Coming soon."));
}
