// The web console: a hash-routed page of views over the service's RPCs, signed in with a token.
import { api, getToken, setToken } from "./api";
import { append, byId, clear, el, field } from "./dom";
import { clearError, showError } from "./messages";
import { session, isAdmin, stopWatching, watch } from "./state";
import { modelsView } from "./views/models";
import { modelView } from "./views/model";
import { compareView } from "./views/compare";
import { backupsView } from "./views/backups";
import { sharingView } from "./views/sharing";
import { adminView } from "./views/admin";

/** A view draws into main and returns what stops its live updates when another view replaces it. */
export type View = (main: HTMLElement, params: URLSearchParams, arg: string) => Promise<(() => void) | void>;

const ROUTES: Record<string, { title: string; view: View; admin?: boolean; nav?: boolean }> = {
  models: { title: "My models", view: modelsView, nav: true },
  model: { title: "Model", view: modelView },
  compare: { title: "Compare", view: compareView, nav: true },
  backups: { title: "Backups", view: backupsView, nav: true },
  sharing: { title: "Sharing", view: sharingView, nav: true },
  admin: { title: "Admin", view: adminView, admin: true, nav: true },
};

let stopView: (() => void) | void;
let rendering = 0;

async function render(): Promise<void> {
  const run = ++rendering;
  stopView?.();
  stopView = undefined;
  const main = byId("main");
  clear(main);
  clearError();
  if (!session.userId) return signInView(main);
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...rest] = path.split("/");
  const route = ROUTES[name] ?? ROUTES.models;
  for (const link of byId("nav").querySelectorAll("a")) {
    if (link.dataset.route === (ROUTES[name] ? name : "models")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${route.title} · Voice models console`;
  if (route.admin && !isAdmin()) {
    append(main, el("h2", {}, route.title), el("p", { id: "refused" }, "This page is for admins; your token has no admin role."));
    return;
  }
  main.setAttribute("aria-busy", "true");
  try {
    const stop = await route.view(main, new URLSearchParams(query), decodeURIComponent(rest.join("/")));
    if (run === rendering) stopView = stop;
    else stop?.();
  } catch (error) {
    if (run === rendering) showError(error);
  } finally {
    main.removeAttribute("aria-busy");
    main.dataset.ready = String(run);
  }
}

function drawNav(): void {
  const nav = byId("nav");
  clear(nav);
  for (const [name, route] of Object.entries(ROUTES)) {
    if (!route.nav || (route.admin && !isAdmin())) continue;
    append(nav, el("a", { href: `#/${name}`, "data-route": name }, route.title));
  }
  append(nav, el("button", { type: "button", id: "sign-out", onclick: signOut }, "Sign out"));
  nav.hidden = false;
  const who = byId("who");
  clear(who);
  append(who, `Signed in as `, el("strong", { id: "user-id" }, session.userId), session.roles.length ? ` (${session.roles.join(", ")})` : "", " · ", el("span", { id: "live" }, "connecting"));
}

async function signIn(token: string): Promise<void> {
  setToken(token);
  try {
    const me = await api.whoAmI({});
    session.userId = me.userId;
    session.roles = [...me.roles];
  } catch (error) {
    setToken(undefined);
    throw error;
  }
  drawNav();
  watch((text) => {
    const live = document.getElementById("live");
    if (live) live.textContent = text === "live" ? "live updates on" : "live updates reconnecting";
  });
}

function signOut(): void {
  setToken(undefined);
  stopWatching();
  session.userId = "";
  session.roles = [];
  byId("nav").hidden = true;
  clear(byId("who"));
  location.hash = "";
  void render();
}

function signInView(main: HTMLElement): void {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", spellcheck: "false", required: true });
  const form = el(
    "form",
    { id: "sign-in" },
    el("h2", {}, "Sign in"),
    el("p", {}, "Paste a bearer token. On the embedded default, mint one in a terminal with ", el("code", {}, "npm run -s token -- <user>"), " (add ", el("code", {}, "--role admin"), " for an admin). It stays in this tab only."),
    field("Token", input),
    el("div", { class: "row" }, el("button", { type: "submit" }, "Sign in")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearError();
    signIn(input.value.trim()).then(
      () => render(),
      (error) => showError(error),
    );
  });
  append(main, form);
  input.focus();
}

window.addEventListener("hashchange", () => void render());
const saved = getToken();
if (saved) signIn(saved).then(() => render(), () => render());
else void render();
