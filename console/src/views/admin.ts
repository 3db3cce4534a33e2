// Admin pages: alerts, fleet analytics, cleanup (dry run first, then run), the audit log with filters.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ExpiringModel } from "../../../gen/voicemodel/v1/governance_pb";
import { api } from "../api";
import { append, clear, confirmAction, el, field, fmtBytes, fmtNum, fmtTime, table } from "../dom";
import { notice, showError } from "../messages";
import { modelName } from "../state";

const SECTIONS = ["alerts", "fleet", "cleanup", "audit"] as const;
const TITLES: Record<(typeof SECTIONS)[number], string> = { alerts: "Alerts", fleet: "Fleet analytics", cleanup: "Cleanup", audit: "Audit log" };

export async function adminView(main: HTMLElement, params: URLSearchParams, arg: string): Promise<void> {
  const section = (SECTIONS as readonly string[]).includes(arg) ? (arg as (typeof SECTIONS)[number]) : "alerts";
  append(
    main,
    el("h2", {}, `Admin: ${TITLES[section]}`),
    el("nav", { "aria-label": "Admin pages", class: "row" }, ...SECTIONS.map((s) => el("a", { href: `#/admin/${s}`, "aria-current": s === section ? "page" : undefined }, TITLES[s]))),
  );
  const body = el("div", { id: `admin-${section}` });
  append(main, body);
  if (section === "alerts") await alerts(body);
  else if (section === "fleet") await fleet(body);
  else if (section === "cleanup") cleanup(body);
  else await audit(body, params);
}

async function alerts(body: HTMLElement): Promise<void> {
  const reply = await api.getAlerts({});
  append(
    body,
    el("p", {}, `Evaluated ${fmtTime(reply.evaluatedAt)}.`),
    table(
      ["Alert", "State", "Severity", "Value", "Threshold", "Summary"],
      reply.alerts.map((a) => el("tr", { class: a.firing ? "firing" : undefined }, el("td", {}, a.name), el("td", {}, a.firing ? "FIRING" : "ok"), el("td", {}, a.severity), el("td", {}, fmtNum(a.value, 3)), el("td", {}, fmtNum(a.threshold, 3)), el("td", {}, a.summary))),
    ),
  );
}

async function fleet(body: HTMLElement): Promise<void> {
  const f = await api.getFleetAnalytics({});
  const rows: [string, string][] = [
    ["Users with models", String(f.totalUsers)],
    ["Live models", String(f.totalModels)],
    ["Active models", String(f.activeModels)],
    ["Deleted, not yet purged", String(f.deletedModels)],
    ["Average quality", fmtNum(f.averageQualityScore, 3)],
    ["Calls (lifetime)", String(f.totalUsageCount)],
    ["Cost (lifetime)", fmtNum(f.totalCost, 4)],
    ["Stored files", fmtBytes(f.storedBytes)],
    ...Object.entries(f.modelsByProvider).map(([k, v]) => [`Provider ${k}`, String(v)] as [string, string]),
    ...Object.entries(f.modelsByStatus).map(([k, v]) => [`Status ${k}`, String(v)] as [string, string]),
  ];
  append(body, el("dl", { class: "grid", id: "fleet-figures" }, ...rows.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v)))));
}

function cleanup(body: HTMLElement): void {
  const dry = el("button", { type: "button", id: "cleanup-dry-run" }, "Dry run");
  const run = el("button", { type: "button", id: "cleanup-run", disabled: true }, "Run cleanup");
  const out = el("div", { id: "cleanup-result" });
  const show = (models: ExpiringModel[], head: string) => {
    clear(out);
    append(
      out,
      el("p", {}, head),
      models.length
        ? table(["Model", "Owner", "Eligible since", "Why"], models.map((m) => el("tr", {}, el("td", {}, m.model ? modelName(m.model) : "?"), el("td", {}, m.model?.userId ?? ""), el("td", {}, fmtTime(m.eligibleAt)), el("td", {}, m.reasons.join("; ")))))
        : el("p", {}, "Nothing is eligible."),
    );
  };
  let eligible = 0;
  dry.addEventListener("click", async () => {
    try {
      const r = await api.cleanupExpiredModels({ dryRun: true });
      eligible = r.eligibleCount;
      show(r.models, `Dry run: ${r.eligibleCount} model(s) would be soft-deleted.`);
      run.disabled = false;
    } catch (error) {
      showError(error);
    }
  });
  run.addEventListener("click", async () => {
    if (!(await confirmAction("Run cleanup", `About ${eligible} model(s) listed by the dry run are soft-deleted now (undelete brings each back).`))) return;
    try {
      const r = await api.cleanupExpiredModels({ dryRun: false });
      show(r.models, `Cleaned ${r.cleanedCount} of ${r.eligibleCount} eligible model(s) in ${r.batches} batch(es).`);
      notice("Cleanup done.");
      run.disabled = true;
    } catch (error) {
      showError(error);
    }
  });
  append(body, el("p", {}, "A dry run lists what is eligible and why; the run soft-deletes exactly those rules' models."), el("div", { class: "row" }, dry, run), out);
}

async function audit(body: HTMLElement, params: URLSearchParams): Promise<void> {
  const user = el("input", { id: "audit-user", value: params.get("user") ?? "", autocomplete: "off" });
  const model = el("input", { id: "audit-model", value: params.get("model") ?? "", autocomplete: "off" });
  const action = el("input", { id: "audit-action", value: params.get("action") ?? "", autocomplete: "off" });
  const since = el("input", { id: "audit-since", type: "date", value: params.get("since") ?? "" });
  const form = el("form", { id: "audit-filters", class: "row" }, field("User id", user), field("Model id", model), field("Action", action), field("Since (UTC day)", since), el("button", { type: "submit" }, "Filter"));
  const list = el("div", { id: "audit-list" });
  const more = el("button", { type: "button", id: "audit-more", hidden: true }, "More");
  append(body, form, list, more);
  let pageToken = "";
  const rows: HTMLElement[] = [];
  const load = async (fresh: boolean) => {
    if (fresh) {
      pageToken = "";
      rows.length = 0;
    }
    const reply = await api.listAuditEvents({
      userId: user.value.trim() || undefined,
      modelId: model.value.trim() || undefined,
      action: action.value.trim() || undefined,
      since: since.value ? timestampFromDate(new Date(`${since.value}T00:00:00Z`)) : undefined,
      limit: 50,
      pageToken: pageToken || undefined,
    });
    for (const e of reply.events)
      rows.push(el("tr", {}, el("td", {}, fmtTime(e.time)), el("td", {}, e.action), el("td", {}, e.actorId), el("td", {}, e.targetUserId), el("td", {}, e.modelId), el("td", {}, e.resultCode), el("td", { class: "mono" }, e.requestId)));
    pageToken = reply.nextPageToken;
    more.hidden = !pageToken;
    clear(list);
    append(list, rows.length ? table(["Time", "Action", "Actor", "User", "Model", "Result", "Request id"], rows) : el("p", {}, "No audit events match."));
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void load(true).catch(showError);
  });
  more.addEventListener("click", () => void load(false).catch(showError));
  await load(true);
}
