// A model's usage over time: calls, cost and latency per UTC day, from one GetVoiceModelUsageSeries
// call (one rate-limited slot per page load), drawn with uPlot.
import uPlot from "uplot";
import type { VoiceModel } from "../../../gen/voicemodel/v1/voice_model_pb";
import { api, describe } from "../api";
import { el, fmtNum } from "../dom";
import { showError } from "../messages";

function plot(title: string, days: number[], values: number[], color: string, width: number): HTMLElement {
  const box = el("figure", { class: "chart", "data-chart": title }, el("figcaption", {}, title));
  const chart = new uPlot(
    {
      width,
      height: 160,
      series: [{}, { label: title, stroke: color, fill: `${color}22`, width: 2 }],
      axes: [{}, { size: 60 }],
      legend: { show: false },
    },
    [days, values],
    box,
  );
  chart.root.setAttribute("aria-hidden", "true");
  return box;
}

export async function usagePanel(model: VoiceModel): Promise<HTMLElement> {
  const panel = el("div", { id: "usage" });
  try {
    const series = await api.getVoiceModelUsageSeries({ modelId: model.id });
    const days = series.days.map((d) => Date.parse(`${d.day}T00:00:00Z`) / 1000);
    const calls = series.days.reduce((n, d) => n + d.usageCount, 0);
    const cost = series.days.reduce((n, d) => n + d.totalCost, 0);
    const latency = calls ? series.days.reduce((n, d) => n + d.averageLatency * d.usageCount, 0) / calls : 0;
    const width = Math.max(240, Math.min(560, (document.getElementById("main")?.clientWidth ?? 600) - 16));
    panel.append(
      el("p", { id: "usage-totals" }, `Last ${series.days.length} days: ${calls} calls · cost ${fmtNum(cost, 4)} · average latency ${fmtNum(latency, 0)} ms`),
      el(
        "div",
        { class: "grid charts" },
        plot("Calls per day", days, series.days.map((d) => d.usageCount), "#1a5fb4", width),
        plot("Cost per day", days, series.days.map((d) => d.totalCost), "#26a269", width),
        plot("Average latency (ms)", days, series.days.map((d) => d.averageLatency), "#c64600", width),
      ),
      // The same figures as a table, for screen readers and for copying.
      el(
        "details",
        {},
        el("summary", {}, "Daily figures"),
        el(
          "div",
          { class: "table-wrap" },
          el("table", {}, el("thead", {}, el("tr", {}, ...["Day", "Calls", "Cost", "Latency (ms)"].map((h) => el("th", { scope: "col" }, h)))),
            el("tbody", {}, ...series.days.filter((d) => d.usageCount > 0).map((d) => el("tr", {}, el("td", {}, d.day), el("td", {}, String(d.usageCount)), el("td", {}, fmtNum(d.totalCost, 4)), el("td", {}, fmtNum(d.averageLatency, 0)))))),
        ),
      ),
    );
  } catch (error) {
    // A "view" share shows the model but not its usage: say so in the panel, not as a failure.
    if (describe(error).code === "PERMISSION_DENIED") panel.append(el("p", {}, "Usage is shown to the owner and to users the model is shared with for use."));
    else showError(error);
  }
  return panel;
}
