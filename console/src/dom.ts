// Building blocks that only ever put data in as text: no innerHTML anywhere in the console.
type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | undefined | ((event: Event) => void)>;

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") node.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, ...children);
  return node;
}

export function append(node: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
}

export function clear(node: Node): void {
  while (node.firstChild) node.removeChild(node.firstChild);
}

export const byId = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

/** A labelled form control: the label wraps it, so its name is the label's text. */
export function field(label: string, control: HTMLElement): HTMLLabelElement {
  return el("label", {}, label, control);
}

export function table(headers: string[], rows: Node[]): HTMLElement {
  // Each cell names its column, for the stacked layout on narrow screens.
  for (const row of rows)
    if (row instanceof HTMLElement) [...row.children].forEach((cell, i) => headers[i] && cell.setAttribute("data-label", headers[i]));
  return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, ...rows)));
}

/** Asks before an action, saying what will happen; resolves true on "Go ahead". */
export function confirmAction(title: string, text: string): Promise<boolean> {
  const dialog = byId<HTMLDialogElement>("confirm");
  byId("confirm-title").textContent = title;
  byId("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const yes = byId("confirm-yes");
    const no = byId("confirm-no");
    const done = (answer: boolean) => {
      yes.removeEventListener("click", onYes);
      no.removeEventListener("click", onNo);
      dialog.removeEventListener("cancel", onNo);
      dialog.close();
      resolve(answer);
    };
    const onYes = () => done(true);
    const onNo = () => done(false);
    yes.addEventListener("click", onYes);
    no.addEventListener("click", onNo);
    dialog.addEventListener("cancel", onNo);
    dialog.showModal();
    yes.focus();
  });
}

export const fmtTime = (t?: { seconds: bigint; nanos: number }) => (t ? new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6)).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—");
export const fmtNum = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "—");
export function fmtBytes(n: bigint | number): string {
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  if (v < 1024 ** 2) return `${(v / 1024).toFixed(1)} KiB`;
  if (v < 1024 ** 3) return `${(v / 1024 ** 2).toFixed(1)} MiB`;
  return `${(v / 1024 ** 3).toFixed(2)} GiB`;
}
