// What every view shows the user: an error with its reason and request id, or a short notice.
import { describe } from "./api";
import { append, byId, clear, el } from "./dom";

export function showError(error: unknown): void {
  const box = byId("error");
  const shown = describe(error);
  clear(box);
  append(
    box,
    el("strong", {}, shown.reason ?? shown.code),
    ": ",
    shown.message,
    shown.requestId ? el("span", { class: "request-id" }, ` (request id ${shown.requestId})`) : null,
    " ",
    el("button", { type: "button", onclick: () => (box.hidden = true) }, "Dismiss"),
  );
  box.dataset.reason = shown.reason ?? shown.code;
  box.hidden = false;
}
export function notice(text: string): void {
  byId("notice").textContent = text;
}
export function clearError(): void {
  byId("error").hidden = true;
}
