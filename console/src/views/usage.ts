// A model's usage: totals now; one rate-limited call per page load.
import type { VoiceModel } from "../../../gen/voicemodel/v1/voice_model_pb";
import { api } from "../api";
import { el, fmtNum, fmtTime } from "../dom";
import { showError } from "../main";

export async function usagePanel(model: VoiceModel): Promise<HTMLElement> {
  const panel = el("div", { id: "usage" });
  try {
    const stats = await api.getVoiceModelUsageStats({ modelId: model.id });
    panel.append(
      el("p", { id: "usage-totals" }, `${stats.usageCount} calls · cost ${fmtNum(stats.totalCost, 4)} · average latency ${fmtNum(stats.averageLatency, 0)} ms · last used ${fmtTime(stats.lastUsed)}`),
    );
  } catch (error) {
    showError(error);
  }
  return panel;
}
