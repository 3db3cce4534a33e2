// Compare 2 to 10 models side by side, the recommendation highlighted; "select best" by criteria.
import { api } from "../api";
import { append, clear, confirmAction, el, field, fmtNum, table } from "../dom";
import { notice, showError } from "../messages";
import { modelName } from "../state";
import { PROVIDERS } from "./models";
import { QUALITY_PARTS } from "./model";

export async function compareView(main: HTMLElement, params: URLSearchParams): Promise<void> {
  const ids = (params.get("ids") ?? "").split(",").filter(Boolean);
  append(main, el("h2", {}, "Compare models"));
  const result = el("div", { id: "comparison" });
  if (ids.length >= 2) {
    const reply = await api.compareVoiceModels({ modelIds: ids });
    const best = reply.recommendation?.modelId;
    const row = (label: string, cell: (i: number) => string) =>
      el("tr", {}, el("th", { scope: "row" }, label), ...reply.models.map((c, i) => el("td", { class: c.model?.id === best ? "best" : undefined }, cell(i))));
    const models = reply.models;
    append(
      result,
      table(
        ["", ...models.map((c) => (c.model ? modelName(c.model) : "?") + (c.model?.id === best ? " ★ recommended" : ""))],
        [
          row("Provider", (i) => models[i].model?.provider ?? ""),
          row("Quality score", (i) => fmtNum(models[i].model?.qualityScore ?? NaN)),
          ...QUALITY_PARTS.map((p) => row(p, (i) => fmtNum(models[i].model?.qualityComponents?.[p] ?? NaN))),
          row("Calls", (i) => String(models[i].usage?.usageCount ?? 0)),
          row("Average latency (ms)", (i) => fmtNum(models[i].usage?.averageLatency ?? NaN, 0)),
          row("Total cost", (i) => fmtNum(models[i].usage?.totalCost ?? NaN, 4)),
          row("Rank", (i) => String(models[i].rank)),
          row("Note", (i) => models[i].note),
        ],
      ),
      reply.recommendation
        ? el("p", { id: "recommendation", class: "best" }, el("strong", {}, "Recommended: "), modelName(models.find((c) => c.model?.id === best)?.model ?? models[0].model!), ` — ${reply.recommendation.reason} (decided by ${reply.recommendation.decidedBy})`)
        : null,
    );
  } else {
    // No selection yet: choose from the user's models (one list call, no rate-limited slot).
    const list = await api.listVoiceModels({ limit: 100 });
    const boxes = list.models.map((m) => ({ m, box: el("input", { type: "checkbox", value: m.id }) }));
    const go = el("button", { type: "button", id: "compare-go" }, "Compare");
    go.addEventListener("click", () => {
      const chosen = boxes.filter((b) => b.box.checked).map((b) => b.m.id);
      if (chosen.length < 2 || chosen.length > 10) return notice("Choose 2 to 10 models.");
      location.hash = `#/compare?ids=${chosen.join(",")}`;
    });
    append(result, el("fieldset", {}, el("legend", {}, "Choose 2 to 10 models"), ...boxes.map(({ m, box }) => el("div", {}, el("label", { class: "inline" }, box, modelName(m))))), go);
  }
  append(main, result, selectBest());
}

function selectBest(): HTMLElement {
  const minQuality = el("input", { id: "sb-min-quality", type: "number", min: 0, max: 1, step: 0.01 });
  const provider = el("select", { id: "sb-provider" }, el("option", { value: "" }, "No preference"), ...PROVIDERS.map((p) => el("option", { value: p }, p)));
  const maxLatency = el("input", { id: "sb-max-latency", type: "number", min: 0, step: 1 });
  const activate = el("input", { id: "sb-activate", type: "checkbox" });
  const out = el("div", { id: "select-best-result" });
  const form = el(
    "form",
    { id: "select-best" },
    el("h3", {}, "Select the best model"),
    el("div", { class: "row" }, field("Min quality", minQuality), field("Preferred provider", provider), field("Max latency (ms)", maxLatency), field("Activate it", activate), el("button", { type: "submit" }, "Select best")),
    out,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const criteria = {
      minQualityScore: minQuality.value === "" ? undefined : Number(minQuality.value),
      preferredProvider: provider.value || undefined,
      maxLatency: maxLatency.value === "" ? undefined : Number(maxLatency.value),
    };
    if (activate.checked && !(await confirmAction("Select and activate", "The best model for these criteria becomes your active model; the active one stops being active."))) return;
    try {
      const reply = await api.selectBestVoiceModel({ criteria, activate: activate.checked });
      clear(out);
      append(
        out,
        el("p", { class: "best" }, el("strong", {}, reply.model ? modelName(reply.model) : "none"), ` — ${reply.reason}${reply.activated ? " (now active)" : ""}`),
        el("ul", {}, ...reply.others.map((o) => el("li", {}, `${o.modelId}: ${o.excluded ? "excluded, " : ""}${o.reason}`))),
      );
    } catch (error) {
      showError(error);
    }
  });
  return form;
}
