// My models: filters, paging and sort over ListVoiceModels; the actions each say first what they do.
import type { VoiceModel } from "../../../gen/voicemodel/v1/voice_model_pb";
import { api } from "../api";
import { append, clear, confirmAction, el, field, fmtNum, fmtTime, table } from "../dom";
import { notice, showError } from "../messages";
import { modelName, onChange } from "../state";

export const PROVIDERS = ["xtts-v2", "google-cloud-tts", "openai-tts"];
export const STATUSES = ["pending", "training", "completed", "failed"];
const PAGE = 10;

// The orders ListVoiceModels offers (orderBy): the service sorts, so paging follows the order.
const SORTS: Record<string, { label: string; orderBy: string }> = {
  default: { label: "Active first, then quality", orderBy: "" },
  newest: { label: "Newest first", orderBy: "created_at desc" },
  oldest: { label: "Oldest first", orderBy: "created_at asc" },
  quality: { label: "Quality, best first", orderBy: "quality_score desc" },
  "quality-low": { label: "Quality, lowest first", orderBy: "quality_score asc" },
};

function select(id: string, options: [string, string][], value = ""): HTMLSelectElement {
  const s = el("select", { id }, ...options.map(([v, label]) => el("option", { value: v }, label)));
  if (value) s.value = value;
  return s;
}

/** The model that becomes active when `leaving` stops being active: the best completed live other one. */
function nextActive(models: VoiceModel[], leaving: VoiceModel): VoiceModel | undefined {
  return models
    .filter((m) => m.id !== leaving.id && m.status === "completed" && !m.deletedAt)
    .sort((a, b) => b.qualityScore - a.qualityScore || Number((b.createdAt?.seconds ?? 0n) - (a.createdAt?.seconds ?? 0n)))[0];
}

export async function modelsView(main: HTMLElement, params: URLSearchParams): Promise<() => void> {
  const filters = {
    provider: select("f-provider", [["", "Any"], ...PROVIDERS.map((p) => [p, p] as [string, string])], params.get("provider") ?? ""),
    status: select("f-status", [["", "Any"], ...STATUSES.map((s) => [s, s] as [string, string])], params.get("status") ?? ""),
    active: select("f-active", [["", "Any"], ["true", "Active only"], ["false", "Inactive only"]], params.get("active") ?? ""),
    minQuality: el("input", { id: "f-min-quality", type: "number", min: 0, max: 1, step: 0.01, value: params.get("minQuality") ?? "" }),
    deleted: el("input", { id: "f-deleted", type: "checkbox" }),
    sort: select("f-sort", Object.entries(SORTS).map(([k, s]) => [k, s.label]), params.get("sort") ?? "default"),
  };
  filters.deleted.checked = params.get("deleted") === "true";
  const list = el("div", { id: "models" });
  const pager = el("div", { class: "row" });
  const compareButton = el("button", { type: "button", id: "compare-selected", disabled: true }, "Compare selected");
  const rollbackButton = el("button", { type: "button", id: "rollback" }, "Roll back active model");
  const form = el(
    "form",
    { id: "filters", class: "row" },
    field("Provider", filters.provider),
    field("Status", filters.status),
    field("Active", filters.active),
    field("Min quality", filters.minQuality),
    field("Include deleted", filters.deleted),
    field("Sort", filters.sort),
    el("button", { type: "submit" }, "Apply"),
  );
  append(main, el("h2", {}, "My models"), createForm(() => load()), form, el("div", { class: "row" }, compareButton, rollbackButton), list, pager);

  let tokens: string[] = [""]; // page tokens of the pages seen, for Previous
  let models: VoiceModel[] = [];
  let total = 0;
  let nextToken = "";
  const selected = new Set<string>();

  const load = async () => {
    const minQuality = filters.minQuality.value === "" ? undefined : Number(filters.minQuality.value);
    const reply = await api.listVoiceModels({
      provider: filters.provider.value || undefined,
      status: filters.status.value || undefined,
      isActive: filters.active.value === "" ? undefined : filters.active.value === "true",
      minQualityScore: minQuality,
      showDeleted: filters.deleted.checked || undefined,
      orderBy: SORTS[filters.sort.value]?.orderBy || undefined,
      limit: PAGE,
      pageToken: tokens.at(-1) || undefined,
    });
    models = reply.models;
    total = reply.total;
    nextToken = reply.nextPageToken;
    draw();
  };

  const act = async (what: () => Promise<unknown>, done: string) => {
    try {
      await what();
      notice(done);
      await load();
    } catch (error) {
      showError(error);
    }
  };

  const actions = (m: VoiceModel) => {
    const buttons: HTMLElement[] = [];
    const name = modelName(m);
    if (m.deletedAt) {
      buttons.push(
        el("button", { type: "button", "data-action": "undelete", onclick: async () => {
          if (await confirmAction("Undelete", `${name} comes back as a live model. It does not become active.`))
            await act(() => api.undeleteVoiceModel({ modelId: m.id }), `${name} is back.`);
        } }, "Undelete"),
      );
      return buttons;
    }
    if (!m.isActive) {
      const current = models.find((x) => x.isActive);
      buttons.push(
        el("button", { type: "button", "data-action": "activate", disabled: m.status !== "completed", onclick: async () => {
          const text = current ? `${name} becomes your active model; ${modelName(current)} stops being active.` : `${name} becomes your active model.`;
          if (await confirmAction("Activate", text)) await act(() => api.activateVoiceModel({ modelId: m.id }), `${name} is active.`);
        } }, "Activate"),
      );
    } else {
      buttons.push(
        el("button", { type: "button", "data-action": "deactivate", onclick: async () => {
          if (await confirmAction("Deactivate", `${name} stops being active; you will have no active model until you activate one.`))
            await act(() => api.deactivateVoiceModel({ modelId: m.id }), `${name} is no longer active.`);
        } }, "Deactivate"),
      );
    }
    buttons.push(
      el("button", { type: "button", "data-action": "delete", onclick: async () => {
        const next = m.isActive ? nextActive(models, m) : undefined;
        const text = m.isActive
          ? `${name} is deleted (undelete brings it back). It is your active model: ${next ? `${modelName(next)} is expected to become active next (the best completed one).` : "no other completed model can take over, so none will be active."}`
          : `${name} is deleted (undelete brings it back). Your active model does not change.`;
        if (await confirmAction("Delete", text))
          await act(async () => {
            const reply = await api.deleteVoiceModel({ modelId: m.id });
            if (m.isActive) notice(reply.activeModelId ? `Now active: ${reply.activeModelId}` : "No model is active now.");
          }, `${name} is deleted.`);
      } }, "Delete"),
    );
    return buttons;
  };

  const draw = () => {
    clear(list);
    clear(pager);
    const rows = models.map((m) => {
      const box = el("input", { type: "checkbox", "aria-label": `Select ${modelName(m)} to compare`, checked: selected.has(m.id) });
      box.addEventListener("change", () => {
        if (box.checked) selected.add(m.id);
        else selected.delete(m.id);
        compareButton.disabled = selected.size < 2 || selected.size > 10;
      });
      return el(
        "tr",
        { "data-model-id": m.id, class: m.deletedAt ? "deleted" : undefined },
        el("td", {}, box),
        el("td", {}, el("a", { href: `#/model/${encodeURIComponent(m.id)}`, class: "model-link" }, modelName(m))),
        el("td", {}, m.provider),
        el("td", {}, m.status),
        el("td", {}, fmtNum(m.qualityScore)),
        el("td", { class: "active-cell" }, m.isActive ? el("span", { class: "active-mark" }, "● active") : ""),
        el("td", {}, fmtTime(m.createdAt)),
        el("td", {}, el("div", { class: "row" }, ...actions(m))),
      );
    });
    append(list, rows.length ? table(["", "Model", "Provider", "Status", "Quality", "Active", "Created", "Actions"], rows) : el("p", {}, "No models match."));
    const page = tokens.length;
    append(
      pager,
      el("span", { id: "page-info" }, `Page ${page} · ${total} model${total === 1 ? "" : "s"}`),
      el("button", { type: "button", id: "prev-page", disabled: page === 1, onclick: () => { tokens.pop(); void load().catch(showError); } }, "Previous"),
      el("button", { type: "button", id: "next-page", disabled: !nextToken, onclick: () => { tokens.push(nextToken); void load().catch(showError); } }, "Next"),
    );
  };

  const reload = () => {
    tokens = [""];
    void load().catch(showError);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    reload();
  });
  filters.sort.addEventListener("change", reload);
  compareButton.addEventListener("click", () => {
    location.hash = `#/compare?ids=${[...selected].join(",")}`;
  });
  rollbackButton.addEventListener("click", async () => {
    try {
      const history = await api.listActivationHistory({ limit: 20 });
      const active = models.find((m) => m.isActive);
      // The entry a rollback undoes: the newest one whose previous model is not the active one.
      const undone = new Set(history.entries.map((e) => e.undoneEntryId).filter(Boolean));
      const entry = history.entries.find((e) => e.previousModelId && e.previousModelId !== active?.id && !undone.has(e.id));
      const text = entry
        ? `Model ${entry.previousModelId} becomes active again (undoing the change "${entry.reason}" of ${fmtTime(entry.createdAt)})${active ? `; ${modelName(active)} stops being active` : ""}.`
        : "The service goes back to the model that was active before the last change, if there is one.";
      if (await confirmAction("Roll back", text))
        await act(async () => {
          const reply = await api.rollbackActiveModel({});
          notice(`Rolled back: ${reply.model ? modelName(reply.model) : "no model"} is active.`);
        }, "Rolled back.");
    } catch (error) {
      showError(error);
    }
  });

  await load();
  // Live: a change elsewhere updates the row in place from the event's model; a new model reloads the page.
  let reloading: ReturnType<typeof setTimeout> | undefined;
  return onChange((event) => {
    const at = models.findIndex((m) => m.id === event.modelId);
    if (event.model && at >= 0) {
      models[at] = event.model;
      if (event.model.isActive) models = models.map((m) => (m.id !== event.model!.id && m.isActive ? { ...m, isActive: false } : m));
      draw();
    } else {
      clearTimeout(reloading);
      reloading = setTimeout(() => void load().catch(showError), 300);
    }
  });
}

/** A new model: provider, path and the quality components (the service computes the score). */
function createForm(onCreated: () => Promise<void>): HTMLElement {
  const provider = select("new-provider", PROVIDERS.map((p) => [p, p] as [string, string]));
  const path = el("input", { id: "new-path", required: true, autocomplete: "off" });
  const parts = ["similarity", "naturalness", "clarity", "consistency"].map((name) => ({
    name,
    input: el("input", { id: `new-${name}`, type: "number", min: 0, max: 1, step: 0.001, value: "0.8" }),
  }));
  const form = el(
    "form",
    { id: "create-form" },
    el("h3", {}, "New model"),
    el("div", { class: "row" }, field("Provider", provider), field("Model path", path), ...parts.map((p) => field(p.name, p.input)), el("button", { type: "submit" }, "Create")),
  );
  const details = el("details", { id: "create" }, el("summary", {}, "Create a model"), form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const reply = await api.createVoiceModel({
        provider: provider.value,
        modelPath: path.value.trim(),
        qualityComponents: Object.fromEntries(parts.map((p) => [p.name, Number(p.input.value)])) as never,
      });
      notice(`Created ${reply.model ? modelName(reply.model) : "the model"}.`);
      path.value = "";
      await onCreated();
    } catch (error) {
      showError(error);
    }
  });
  return details;
}
