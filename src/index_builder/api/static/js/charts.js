// Charts with the plotly.js that the installed plotly Python package ships (served by
// the app under /static/vendor/, loaded on demand so the data requests do not wait for it).

import { pct, points } from "./format.js";

/** Okabe-Ito (colour-blind safe), most distinct first; the yellow is last (low contrast). */
export const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000", "#f0e442"];
/** Line styles, so series differ by more than colour. */
export const DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"];

const FONT = { family: "system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif", size: 13, color: "#1a1a1a" };
const CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
  toImageButtonOptions: { format: "png", filename: "index-builder-chart" },
};

let plotly = null;

/**
 * plotly.js, once it has run. The page loads it with an async script element (its
 * 4.8 MB compile off the main thread while the page fetches its data); a failed
 * load shows as an error on the charts, not as a page that waits forever.
 */
export function loadPlotly() {
  if (!plotly) {
    plotly = new Promise((resolve, reject) => {
      const settle = () =>
        window.Plotly ? resolve(window.Plotly) : reject(new Error("the chart library (plotly.js) could not be loaded"));
      if (window.Plotly || document.readyState === "complete") {
        settle();
        return;
      }
      const script = document.getElementById("plotly-script");
      script.addEventListener("load", settle);
      script.addEventListener("error", settle);
      window.addEventListener("load", settle); // every script has loaded or failed by then
    });
  }
  return plotly;
}

/** Style of the i-th series: colour and dash both change (24 distinct pairs). */
export function seriesStyle(i) {
  return { color: PALETTE[i % PALETTE.length], dash: DASHES[i % DASHES.length] };
}

/** Drawdown of a level series: level / running peak - 1 (for display; the API gives the max). */
export function drawdowns(levels) {
  let peak = -Infinity;
  return levels.map((v) => {
    peak = Math.max(peak, v);
    return v / peak - 1;
  });
}

/** Levels rebased so that the first point is 100. */
export function rebased(levels) {
  const first = levels[0];
  return levels.map((v) => (v / first) * 100);
}

function layout(narrow, yTitle) {
  return {
    font: FONT,
    margin: { l: narrow ? 48 : 64, r: 12, t: 8, b: 36 },
    hovermode: "x unified",
    showlegend: true,
    legend: { orientation: "h", y: 1.02, yanchor: "bottom", x: 0, font: { size: 12 } },
    xaxis: {
      type: "date",
      anchor: "y2",
      rangebreaks: [{ bounds: ["sat", "mon"] }], // no empty weekends between sessions
      showspikes: true,
      spikemode: "across",
      spikethickness: 1,
    },
    yaxis: { domain: [0.34, 1], title: { text: narrow ? "" : yTitle }, tickformat: ",.0f", automargin: true },
    yaxis2: { domain: [0, 0.26], title: { text: narrow ? "" : "Drawdown" }, tickformat: ".0%", automargin: true, rangemode: "tozero" },
    plot_bgcolor: "#ffffff",
    paper_bgcolor: "#ffffff",
  };
}

/**
 * The level chart with the drawdown beneath. `series`: [{id, rows}] (rows of
 * GET /index-performance). One series: its levels; several: each rebased to 100.
 */
export async function drawLevelChart(element, series) {
  const Plotly = await loadPlotly();
  const narrow = element.clientWidth < 560;
  const compare = series.length > 1;
  const traces = [];
  series.forEach(({ id, rows }, i) => {
    const style = seriesStyle(i);
    const x = rows.map((r) => r.date);
    const raw = rows.map((r) => r.level);
    const y = compare ? rebased(raw) : raw;
    traces.push({
      type: "scatter",
      mode: "lines",
      name: compare ? `${id} (rebased)` : id,
      legendgroup: id,
      x,
      y,
      line: { color: style.color, dash: style.dash, width: 2 },
      hovertemplate: compare ? "%{y:,.2f}" : "%{y:,.2f} pts",
    });
    traces.push({
      type: "scatter",
      mode: "lines",
      name: `${id} drawdown`,
      legendgroup: id,
      showlegend: false,
      x,
      y: drawdowns(raw),
      yaxis: "y2",
      line: { color: compare ? style.color : "#d55e00", dash: style.dash, width: 1.5 },
      fill: compare ? "none" : "tozeroy",
      fillcolor: "rgba(213, 94, 0, 0.18)",
      hovertemplate: "%{y:.2%}",
    });
  });
  const title = compare ? "Level, rebased to 100" : "Level (points)";
  await Plotly.react(element, traces, layout(narrow, title), CONFIG);
  element.setAttribute("aria-label", describeLevels(series));
  element.dataset.rendered = String(Date.now());
}

/** A sentence for screen readers: the chart's start, end and change per series. */
export function describeLevels(series) {
  if (!series.length || !series[0].rows.length) return "No levels in the window.";
  const compare = series.length > 1;
  const parts = series.map(({ id, rows }) => {
    const first = rows[0];
    const last = rows[rows.length - 1];
    const change = last.level / first.level - 1;
    const end = compare ? points((last.level / first.level) * 100) : points(last.level);
    const start = compare ? "100.00" : points(first.level);
    return `${id} from ${start} on ${first.date} to ${end} on ${last.date} (${pct(change)})`;
  });
  return `${compare ? "Rebased levels" : "Level"} with drawdown beneath: ${parts.join("; ")}.`;
}

/** Horizontal bars of the weight per sector. `sectors`: [{sector, weight, count}], largest first. */
export async function drawSectorChart(element, sectors) {
  const Plotly = await loadPlotly();
  const narrow = element.clientWidth < 560;
  const ordered = [...sectors].reverse(); // plotly draws the first category at the bottom
  const trace = {
    type: "bar",
    orientation: "h",
    x: ordered.map((s) => s.weight),
    y: ordered.map((s) => s.sector),
    text: ordered.map((s) => pct(s.weight)),
    textposition: "auto",
    marker: { color: "#56b4e9", line: { color: "#0072b2", width: 1 } },
    hovertemplate: "%{y}: %{x:.2%} (%{customdata} constituents)<extra></extra>",
    customdata: ordered.map((s) => s.count),
  };
  const layoutSectors = {
    font: FONT,
    margin: { l: narrow ? 110 : 180, r: 12, t: 8, b: 36 },
    xaxis: { tickformat: ".0%", rangemode: "tozero" },
    yaxis: { automargin: true, tickfont: { size: narrow ? 11 : 13 } },
    plot_bgcolor: "#ffffff",
    paper_bgcolor: "#ffffff",
    showlegend: false,
  };
  await Plotly.react(element, [trace], layoutSectors, CONFIG);
  element.dataset.rendered = String(Date.now());
}

/** Empty a chart (no data in the window). */
export async function clearChart(element, message) {
  if (window.Plotly && element.data) window.Plotly.purge(element);
  element.textContent = message;
}
