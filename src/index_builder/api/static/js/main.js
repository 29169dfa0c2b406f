// The dashboard: index and date-range pickers, summary cards, level/drawdown chart
// (with a comparison mode), composition, sector breakdown, changes, build and export.
// Every number shown comes from the API (same origin); the page only rebases levels
// to 100 and draws drawdowns for the chart.

import { ApiError, getApiKey, getJson, onResponse, setApiKey } from "./api.js";
import { Actions, showProblem } from "./actions.js";
import { clearChart, describeLevels, drawLevelChart, drawSectorChart, seriesStyle } from "./charts.js";
import { CompositionTable, renderSectorTable, sectorWeights } from "./composition.js";
import { isoDate, num, pct, points } from "./format.js";
import { noteCache, refreshHealth } from "./health.js";
import { renderTimeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);
const DEFAULT_INDEX = "ew100";
const CARD_FORMATS = {
  total_return: pct,
  annualized_return: pct,
  annualized_volatility: pct,
  sharpe: num,
  max_drawdown: pct,
  turnover: pct,
};

const state = {
  indices: [], // GET /indices
  index: null,
  start: "",
  end: "",
  compare: false,
  compared: new Set(),
  date: "",
  generation: 0, // of loadAll
  performanceGeneration: 0,
  compositionGeneration: 0,
  changesGeneration: 0,
};

const table = new CompositionTable($("composition-table"));

function info(id) {
  return state.indices.find((i) => i.definition.id === id) || null;
}

function built(id) {
  return info(id)?.build || null;
}

// ------------------------------------------------------------------ URL hash (bookmarks)
function readHash() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  return {
    index: params.get("index"),
    start: params.get("start") || "",
    end: params.get("end") || "",
    date: params.get("date") || "",
    compare: params.get("compare"),
  };
}

function writeHash() {
  const params = new URLSearchParams();
  if (state.index) params.set("index", state.index);
  if (state.start) params.set("start", state.start);
  if (state.end) params.set("end", state.end);
  if (state.date) params.set("date", state.date);
  if (state.compare) params.set("compare", [...state.compared].join(","));
  history.replaceState(null, "", `#${params}`);
}

// ------------------------------------------------------------------ pickers
function fillIndexPicker() {
  const select = $("index-select");
  const options = state.indices.map(({ definition, build }) => {
    const option = document.createElement("option");
    option.value = definition.id;
    option.textContent = `${definition.name} (${definition.id})${build ? "" : " (not built)"}`;
    return option;
  });
  select.replaceChildren(...options);
  select.value = state.index;
}

function fillCompareList() {
  const list = $("compare-list");
  const items = state.indices
    .filter(({ definition }) => definition.id !== state.index)
    .map(({ definition, build }) => {
      const id = `compare-${definition.id}`;
      const wrap = document.createElement("div");
      wrap.className = "check";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.id = id;
      box.value = definition.id;
      box.checked = state.compared.has(definition.id);
      box.disabled = !build;
      box.addEventListener("change", () => {
        if (box.checked) state.compared.add(definition.id);
        else state.compared.delete(definition.id);
        loadPerformance();
      });
      const label = document.createElement("label");
      label.htmlFor = id;
      label.textContent = definition.id + (build ? "" : " (not built)");
      wrap.append(box, label);
      return wrap;
    });
  list.replaceChildren(...items);
  list.hidden = !state.compare;
}

function bound(value, min, max) {
  if (!value) return value;
  if (min && value < min) return min;
  if (max && value > max) return max;
  return value;
}

/** Date inputs limited to the built range; the window clamped into it. */
function fitRange() {
  const build = built(state.index);
  for (const id of ["start-date", "end-date", "composition-date"]) {
    $(id).min = build ? build.base_date : "";
    $(id).max = build ? build.built_through : "";
  }
  if (!build) {
    $("index-info").textContent = "Not built yet: build it below (Build and export).";
    return;
  }
  state.start = bound(state.start, build.base_date, build.built_through) || build.base_date;
  state.end = bound(state.end, build.base_date, build.built_through) || build.built_through;
  if (state.start > state.end) [state.start, state.end] = [build.base_date, build.built_through];
  state.date = bound(state.date, build.base_date, build.built_through) || state.end;
  const d = info(state.index).definition;
  $("index-info").textContent =
    `Built ${build.base_date} to ${build.built_through} (version ${build.version}); ` +
    `top ${d.top_n}, ${d.weighting.replaceAll("_", " ")}, ${d.rebalance}.`;
}

function showRange() {
  $("start-date").value = state.start;
  $("end-date").value = state.end;
  $("composition-date").value = state.date;
}

function preset(range) {
  const build = built(state.index);
  if (!build) return;
  const end = new Date(`${build.built_through}T00:00:00Z`);
  const start = new Date(end);
  if (range === "1M") start.setUTCMonth(start.getUTCMonth() - 1);
  else if (range === "3M") start.setUTCMonth(start.getUTCMonth() - 3);
  else if (range === "1Y") start.setUTCFullYear(start.getUTCFullYear() - 1);
  else if (range === "YTD") start.setUTCMonth(0, 1);
  state.start = range === "ALL" ? build.base_date : bound(isoDate(start), build.base_date, build.built_through);
  state.end = build.built_through;
  state.date = state.end;
  for (const b of document.querySelectorAll(".presets button")) {
    b.setAttribute("aria-pressed", String(b.dataset.range === range));
  }
  showRange();
  loadAll();
}

// ------------------------------------------------------------------ problems
const problems = new Map();

function report(context, error) {
  if (error && error.name === "AbortError") return;
  if (error) problems.set(context, error);
  else problems.delete(context);
  const element = $("page-error");
  const [first] = problems.entries();
  if (!first) {
    showProblem(element, null);
    return;
  }
  const [where, problem] = first;
  showProblem(element, problem instanceof ApiError ? problem : new ApiError({ title: "Error", detail: String(problem.message || problem) }));
  const context_ = document.createElement("span");
  context_.className = "problem-context";
  context_.textContent = `${where}: `;
  element.prepend(context_);
}

function busy(id, on) {
  $(id).setAttribute("aria-busy", String(on));
}

// ------------------------------------------------------------------ data
function showCards(summary) {
  for (const card of document.querySelectorAll("#cards .card")) {
    const key = card.dataset.stat;
    const value = summary ? summary[key] : null;
    card.dataset.value = value === null || value === undefined ? "" : String(value);
    card.querySelector("dd").textContent = summary ? CARD_FORMATS[key](value) : "–";
    card.title = value === null && summary ? "Not defined for a window this short" : "";
  }
}

function showComparison(series) {
  const wrap = $("comparison-summary");
  wrap.hidden = series.length < 2;
  const rows = series.map(({ id, rows: data, summary }, i) => {
    const tr = document.createElement("tr");
    tr.dataset.index = id;
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = id;
    const swatchCell = document.createElement("td");
    const style = seriesStyle(i);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.color = style.color;
    swatch.style.borderTopStyle = style.dash === "solid" ? "solid" : style.dash.includes("dot") ? "dotted" : "dashed";
    swatchCell.append(swatch, document.createTextNode(` ${style.dash}`));
    const last = data.length ? (data[data.length - 1].level / data[0].level) * 100 : null;
    const cells = [points(last), pct(summary.total_return), pct(summary.annualized_volatility), num(summary.sharpe), pct(summary.max_drawdown)];
    tr.append(name, swatchCell);
    for (const text of cells) {
      const td = document.createElement("td");
      td.className = "num";
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  wrap.querySelector("tbody").replaceChildren(...rows);
}

async function fetchPerformance(id) {
  const body = await getJson("/index-performance", { index: id, start_date: state.start, end_date: state.end });
  return { id, rows: body.data, summary: body.summary, body };
}

/** Performance of the index (and the compared ones): cards and the level chart. */
async function loadPerformance() {
  const generation = ++state.performanceGeneration;
  writeHash();
  busy("summary-panel", true);
  busy("chart-panel", true);
  const ids = [state.index];
  if (state.compare) ids.push(...[...state.compared].filter((id) => id !== state.index && built(id)));
  const results = await Promise.allSettled(ids.map((id) => fetchPerformance(id)));
  if (generation !== state.performanceGeneration) return;
  const series = [];
  results.forEach((result, i) => {
    const what = `performance of ${ids[i]}`;
    if (result.status === "fulfilled") {
      report(what, null);
      series.push(result.value);
    } else report(what, result.reason);
  });
  const primary = series.find((s) => s.id === state.index);
  showCards(primary ? primary.summary : null);
  $("summary-window").textContent = primary
    ? `${state.index}, ${primary.body.start_date} to ${primary.body.end_date} (${primary.body.return_type.replace("_", " ")} return)`
    : "";
  showComparison(series);
  if (!performance.getEntriesByName("data-shown").length) performance.mark("data-shown");
  const chart = $("level-chart");
  try {
    if (series.length) {
      await drawLevelChart(chart, series);
      if (generation !== state.performanceGeneration) return;
      $("chart-desc").textContent = describeLevels(series);
      if (!performance.getEntriesByName("chart-drawn").length) performance.mark("chart-drawn");
    } else {
      await clearChart(chart, "No levels to draw.");
      $("chart-desc").textContent = "";
    }
    report("chart", null);
  } catch (error) {
    report("chart", error);
  }
  busy("summary-panel", false);
  busy("chart-panel", false);
}

/** Composition on the chosen date: the table and the sector breakdown. */
async function loadComposition() {
  const generation = ++state.compositionGeneration;
  writeHash();
  busy("composition-panel", true);
  busy("sectors-panel", true);
  try {
    const body = await getJson("/index-composition", { index: state.index, date: state.date });
    if (generation !== state.compositionGeneration) return;
    report("composition", null);
    table.show(body.constituents);
    const shown = body.constituents.length;
    $("composition-info").textContent =
      `${body.total} constituents after the close of ${body.effective_date}` +
      (body.effective_date !== body.date ? ` (${body.date} is no trading day)` : "") +
      (shown < body.total ? `; the first ${shown} by rank are listed.` : ".");
    $("composition-table").dataset.date = body.effective_date;
    const sectors = sectorWeights(body.constituents);
    renderSectorTable($("sector-table"), sectors);
    try {
      await drawSectorChart($("sector-chart"), sectors);
      report("sector chart", null);
    } catch (error) {
      report("sector chart", error); // the table above still has the numbers
    }
  } catch (error) {
    if (generation !== state.compositionGeneration) return;
    table.show([]);
    renderSectorTable($("sector-table"), []);
    $("composition-info").textContent = "";
    report("composition", error);
  } finally {
    if (generation === state.compositionGeneration) {
      busy("composition-panel", false);
      busy("sectors-panel", false);
    }
  }
}

/** Entered / exited per rebalance in the window. */
async function loadChanges() {
  const generation = ++state.changesGeneration;
  busy("changes-panel", true);
  try {
    const body = await getJson("/composition-changes", { index: state.index, start_date: state.start, end_date: state.end });
    if (generation !== state.changesGeneration) return;
    report("changes", null);
    renderTimeline($("timeline"), $("changes-info"), body.changes);
  } catch (error) {
    if (generation !== state.changesGeneration) return;
    $("timeline").replaceChildren();
    $("changes-info").textContent = "";
    report("changes", error);
  } finally {
    if (generation === state.changesGeneration) busy("changes-panel", false);
  }
}

function clearData() {
  showCards(null);
  table.show([]);
  renderSectorTable($("sector-table"), []);
  $("timeline").replaceChildren();
  for (const id of ["changes-info", "composition-info", "summary-window", "chart-desc"]) $(id).textContent = "";
  clearChart($("level-chart"), "Not built yet.");
  clearChart($("sector-chart"), "");
}

/** Load everything for the current index and window. */
async function loadAll() {
  const generation = ++state.generation;
  problems.clear();
  report("", null);
  if (!built(state.index)) {
    writeHash();
    clearData();
    return;
  }
  await Promise.all([loadPerformance(), loadComposition(), loadChanges()]);
  if (generation === state.generation) document.body.dataset.loaded = String(generation);
}

async function loadIndices() {
  state.indices = await getJson("/indices");
}

function pickIndex(id) {
  state.index = id;
  state.compared.delete(id);
  fitRange();
  showRange();
  fillCompareList();
}

// ------------------------------------------------------------------ wiring
function wire() {
  $("index-select").addEventListener("change", (event) => {
    // a new index keeps the window when it fits, else takes the index's whole range
    pickIndex(event.target.value);
    loadAll();
  });
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    const start = $("start-date").value;
    const end = $("end-date").value;
    if (!start || !end || start > end) {
      report("date range", new ApiError({ title: "Invalid date range", detail: "pick a start date on or before the end date" }));
      return;
    }
    state.start = start;
    state.end = end;
    state.date = bound(state.date, start, end) === state.date ? state.date : end;
    for (const b of document.querySelectorAll(".presets button")) b.setAttribute("aria-pressed", "false");
    showRange();
    loadAll();
  });
  for (const button of document.querySelectorAll(".presets button")) {
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => preset(button.dataset.range));
  }
  $("compare-toggle").addEventListener("change", (event) => {
    state.compare = event.target.checked;
    $("compare-list").hidden = !state.compare;
    loadPerformance();
  });
  let timer = null;
  $("composition-date").addEventListener("change", (event) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (!event.target.value) return;
      state.date = event.target.value;
      loadComposition();
    }, 200);
  });
  const key = $("api-key");
  key.value = getApiKey();
  $("key-form").addEventListener("submit", (event) => event.preventDefault());
  key.addEventListener("input", () => setApiKey(key.value.trim()));
  $("api-key-clear").addEventListener("click", () => {
    key.value = "";
    setApiKey("");
    key.focus();
  });
  $("health-refresh").addEventListener("click", () => refreshHealth());
  new Actions({
    selection: () => ({ index: state.index, start: state.start, end: state.end }),
    onBuilt: async () => {
      await loadIndices();
      fillIndexPicker();
      fitRange();
      showRange();
      fillCompareList();
      await Promise.all([loadAll(), refreshHealth()]);
    },
  });
}

/** Read the index list and show the bookmarked (or default) index. False on failure. */
async function boot() {
  try {
    await loadIndices();
  } catch (error) {
    report("index list", error);
    return false;
  }
  const wanted = readHash();
  const ids = state.indices.map((i) => i.definition.id);
  const firstBuilt = state.indices.find((i) => i.build)?.definition.id;
  state.index = ids.includes(wanted.index)
    ? wanted.index
    : built(DEFAULT_INDEX) ? DEFAULT_INDEX : firstBuilt || ids[0] || null;
  if (!state.index) {
    report("index list", new ApiError({ title: "No indices", detail: "the server has no index definitions" }));
    return false;
  }
  Object.assign(state, { start: wanted.start, end: wanted.end, date: wanted.date });
  if (wanted.compare !== null) {
    state.compare = true;
    for (const id of wanted.compare.split(",")) if (ids.includes(id)) state.compared.add(id);
    $("compare-toggle").checked = true;
  }
  fillIndexPicker();
  pickIndex(state.index);
  await loadAll();
  return true;
}

/** A new API key: try again what the old one (or none) was refused. */
function retryWithNewKey() {
  const refused = [...problems.values()].some((p) => p.status === 401 || p.status === 403);
  if (!state.indices.length) boot();
  else if (refused) loadAll();
}

async function start() {
  onResponse(noteCache);
  wire();
  $("api-key").addEventListener("change", retryWithNewKey);
  const [booted] = await Promise.all([boot(), refreshHealth()]);
  if (booted) performance.mark("dashboard-ready");
}

start();
