// One model: metadata, quality, usage, file, upload and export, lineage, activation timeline, consent.
import type { VoiceModel } from "../../../gen/voicemodel/v1/voice_model_pb";
import { api, describe } from "../api";
import { append, clear, el, fmtBytes, fmtNum, fmtTime } from "../dom";
import { downloadExport, uploadModelFile } from "../files";
import { notice, showError } from "../messages";
import { modelName, onChange, session } from "../state";
import { usagePanel } from "./usage";

export const QUALITY_PARTS = ["similarity", "naturalness", "clarity", "consistency"] as const;

/** The four quality components as a bar chart (one labelled bar each, 0 to 1). */
export function qualityChart(model: VoiceModel): HTMLElement {
  const q = model.qualityComponents;
  const chart = el("div", { class: "quality-chart", role: "img", "aria-label": q ? QUALITY_PARTS.map((p) => `${p} ${fmtNum(q[p])}`).join(", ") : "no quality components" });
  if (!q) return append(chart, "No quality components recorded."), chart;
  for (const part of QUALITY_PARTS) {
    const fill = el("span", { class: "fill" });
    fill.style.width = `${Math.max(0, Math.min(1, q[part])) * 12}rem`;
    append(chart, el("div", { class: "bar" }, el("span", {}, part), fill, el("span", {}, fmtNum(q[part]))));
  }
  return chart;
}

function details(model: VoiceModel): HTMLElement {
  const rows: [string, string][] = [
    ["Id", model.id],
    ["Owner", model.userId],
    ["Provider", model.provider],
    ["Path", model.modelPath],
    ["Number", String(model.modelNumber)],
    ["Status", model.status],
    ["Active", model.isActive ? "yes" : "no"],
    ["Quality score", fmtNum(model.qualityScore)],
    ["Sample rate", `${model.sampleRate} Hz`],
    ["Training job", model.trainingJobId ?? "—"],
    ["Created", fmtTime(model.createdAt)],
    ["Updated", fmtTime(model.updatedAt)],
    ["Deleted", model.deletedAt ? fmtTime(model.deletedAt) : "no"],
    ["File size", fileSize(model)],
    ["File SHA-256", fileSha(model)],
  ];
  return el("dl", { id: "model-details", class: "grid" }, ...rows.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", { "data-field": k }, v))));
}

// GetVoiceModel carries the file's size and checksum; a model from an event does not.
const fileSize = (model: VoiceModel) => (model.file ? fmtBytes(model.file.sizeBytes) : "no file stored");
const fileSha = (model: VoiceModel) => model.file?.sha256 || "—";

/** Uploads in chunks through Start/Append/FinishModelFileUpload; the bar moves per acknowledged chunk. */
function uploadPanel(model: VoiceModel, onDone: () => void): HTMLElement {
  const input = el("input", { type: "file", id: "upload-file" });
  const bar = el("progress", { id: "upload-progress", max: 100, value: 0, "aria-label": "Upload progress" });
  const status = el("span", { id: "upload-status" });
  const button = el("button", { type: "button", id: "upload-start" }, "Upload");
  button.addEventListener("click", async () => {
    const file = input.files?.[0];
    if (!file) return void (status.textContent = "Choose a file first.");
    button.disabled = true;
    status.textContent = "Uploading…";
    try {
      const done = await uploadModelFile(model.id, file, (sent, total) => {
        bar.value = total ? Math.floor((sent / total) * 100) : 100;
        status.textContent = `Uploading… ${fmtBytes(sent)} of ${fmtBytes(total)}`;
      });
      bar.value = 100;
      status.textContent = `Uploaded ${fmtBytes(done.sizeBytes)}, SHA-256 ${done.sha256}.`;
      onDone();
    } catch (error) {
      const shown = describe(error);
      status.textContent = `Upload refused: ${shown.reason ?? shown.code}: ${shown.message} (request id ${shown.requestId ?? "?"})`;
      showError(error);
    } finally {
      button.disabled = false;
    }
  });
  return el("section", { "aria-labelledby": "upload-h" }, el("h3", { id: "upload-h" }, "Upload the model file"), el("div", { class: "row" }, el("label", {}, "File", input), button, bar, status));
}

export async function modelView(main: HTMLElement, _params: URLSearchParams, id: string): Promise<() => void> {
  const header = el("div");
  const body = el("div");
  append(main, header, body);
  let model = (await api.getVoiceModel({ modelId: id })).model!;
  const draw = () => {
    clear(header);
    append(
      header,
      el("h2", { id: "model-title" }, modelName(model), model.isActive ? el("span", { class: "active-mark" }, " ● active") : ""),
      details(model),
      el("h3", {}, "Metadata"),
      el("pre", { id: "model-metadata" }, JSON.stringify(model.metadata ?? {}, null, 2)),
      el("h3", {}, "Quality"),
      qualityChart(model),
    );
  };
  draw();
  const own = model.userId === session.userId;
  const exportButton = el("button", { type: "button", id: "export" }, "Download export");
  const exportBar = el("progress", { id: "export-progress", max: 100, value: 0, "aria-label": "Export progress" });
  exportButton.addEventListener("click", () => {
    exportButton.disabled = true;
    downloadExport(model.id, (done, total) => (exportBar.value = total ? Math.floor((done / total) * 100) : 100))
      .then(() => notice("Export downloaded."), showError)
      .finally(() => (exportButton.disabled = false));
  });
  const lineage = el("ol", { id: "lineage" });
  const timeline = el("ol", { id: "timeline", class: "timeline" });
  const consent = el("div", { id: "consent" });
  append(
    body,
    el("h3", {}, "Usage"),
    await usagePanel(model),
    own ? uploadPanel(model, () => void refresh()) : null,
    el("div", { class: "row" }, exportButton, exportBar),
    el("h3", {}, "Lineage"),
    lineage,
    own ? el("h3", {}, "Activation history") : null,
    own ? timeline : null,
    el("h3", {}, "Consent"),
    consent,
  );
  const refresh = async () => {
    model = (await api.getVoiceModel({ modelId: id })).model!;
    draw();
  };

  const [lin, history, consents] = await Promise.allSettled([
    api.getVoiceModelLineage({ modelId: id }),
    own ? api.listActivationHistory({ limit: 100 }) : Promise.resolve(undefined),
    own ? api.listConsents({ limit: 100 }) : Promise.resolve(undefined),
  ]);
  if (lin.status === "fulfilled") {
    const chain = [...lin.value.ancestors].reverse();
    if (!chain.length) append(lineage, el("li", {}, "No parent: this model starts its line."));
    for (const a of chain) append(lineage, el("li", {}, el("a", { href: `#/model/${encodeURIComponent(a.id)}` }, modelName(a))));
    append(lineage, el("li", {}, el("strong", {}, modelName(model)), " (this model)"));
  } else showError(lin.reason);
  if (history.status === "fulfilled" && history.value) {
    const mine = history.value.entries.filter((e) => e.newModelId === id || e.previousModelId === id);
    if (!mine.length) append(timeline, el("li", {}, "Never active."));
    for (const e of mine)
      append(timeline, el("li", {}, el("time", {}, fmtTime(e.createdAt)), " — ", e.newModelId === id ? "became active" : "stopped being active", ` (${e.reason}, by ${e.actorId})`));
  } else if (history.status === "rejected") showError(history.reason);
  if (consents.status === "fulfilled" && consents.value) {
    const record = consents.value.consents.find((c) => c.modelId === id || (model.trainingJobId && c.trainingJobId === model.trainingJobId));
    if (!record) append(consent, el("p", {}, "No consent record is linked to this model."));
    else
      append(
        consent,
        el("dl", {},
          el("dt", {}, "Speaker"), el("dd", {}, `${record.speaker?.kind ?? ""} ${record.speaker?.name ?? ""}`),
          el("dt", {}, "Statement"), el("dd", {}, `${record.statementText} (version ${record.statementVersion})`),
          el("dt", {}, "Captured"), el("dd", {}, `${fmtTime(record.capturedAt)} by ${record.captureMethod}`),
          el("dt", {}, "Recording"), el("dd", {}, record.recording ? `${fmtBytes(record.recording.sizeBytes)}, SHA-256 ${record.recording.sha256}` : "none"),
        ),
      );
  } else if (consents.status === "rejected") showError(consents.reason);

  return onChange((event) => {
    if (event.modelId !== id) return;
    if (event.type === "file_stored") {
      void refresh().catch(showError);
    } else if (event.model) {
      model = { ...event.model, file: model.file };
      draw();
      notice(`This model changed elsewhere (${event.type}).`);
    } else notice(`This model was ${event.type} elsewhere.`);
  });
}
