// The composition table (sortable, with weight bars) and the sector breakdown.

import { pct, usd, usdCompact } from "./format.js";

/** Constituents grouped by sector: [{sector, weight, count}], largest weight first. */
export function sectorWeights(constituents) {
  const groups = new Map();
  for (const c of constituents) {
    const sector = c.sector || "Unknown";
    const group = groups.get(sector) || { sector, weight: 0, count: 0 };
    group.weight += c.weight;
    group.count += 1;
    groups.set(sector, group);
  }
  return [...groups.values()].sort((a, b) => b.weight - a.weight || a.sector.localeCompare(b.sector));
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

/** A sortable composition table bound to a <table> with header buttons. */
export class CompositionTable {
  constructor(table) {
    this.table = table;
    this.body = table.tBodies[0];
    this.rows = [];
    this.sort = { key: "rank", direction: "ascending" };
    for (const th of table.tHead.rows[0].cells) {
      th.querySelector("button").addEventListener("click", () => this.sortBy(th.dataset.key));
    }
  }

  /** Show the constituents of GET /index-composition. */
  show(constituents) {
    this.rows = constituents;
    this.render();
  }

  /** Sort by a column: ascending first, then toggled. */
  sortBy(key) {
    const direction = this.sort.key === key && this.sort.direction === "ascending" ? "descending" : "ascending";
    this.sort = { key, direction };
    this.render();
  }

  sorted() {
    const { key, direction } = this.sort;
    const th = this.table.querySelector(`th[data-key="${key}"]`);
    const numeric = th && th.dataset.type === "number";
    const sign = direction === "ascending" ? 1 : -1;
    return [...this.rows].sort((a, b) => {
      const x = a[key];
      const y = b[key];
      if (x === y) return a.rank - b.rank;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return sign * (numeric ? x - y : String(x).localeCompare(String(y)));
    });
  }

  render() {
    for (const th of this.table.tHead.rows[0].cells) {
      if (th.dataset.key === this.sort.key) th.setAttribute("aria-sort", this.sort.direction);
      else th.removeAttribute("aria-sort");
    }
    const maxWeight = Math.max(...this.rows.map((r) => r.weight), 0);
    const fragment = document.createDocumentFragment();
    for (const row of this.sorted()) {
      const tr = document.createElement("tr");
      tr.dataset.symbol = row.symbol;
      tr.append(cell(String(row.rank), "num"));
      const symbol = document.createElement("th");
      symbol.scope = "row";
      symbol.textContent = row.symbol;
      tr.append(symbol);
      tr.append(cell(row.name || "", "hide-narrow"));
      tr.append(cell(row.sector || "Unknown"));
      const weight = document.createElement("td");
      weight.className = "num";
      weight.dataset.key = "weight";
      weight.dataset.value = String(row.weight);
      const wrap = document.createElement("div");
      wrap.className = "weight-cell";
      const track = document.createElement("span");
      track.className = "weight-track";
      track.setAttribute("aria-hidden", "true");
      const bar = document.createElement("span");
      bar.className = "weight-bar";
      bar.style.width = `${maxWeight > 0 ? (row.weight / maxWeight) * 100 : 0}%`;
      track.append(bar);
      const value = document.createElement("span");
      value.className = "weight-value";
      value.textContent = pct(row.weight);
      wrap.append(track, value);
      weight.append(wrap);
      tr.append(weight);
      const cap = cell(usdCompact(row.market_cap), "num hide-narrow");
      cap.dataset.key = "market_cap";
      cap.dataset.value = String(row.market_cap);
      tr.append(cap);
      const price = cell(usd(row.price), "num hide-narrow");
      price.dataset.key = "price";
      price.dataset.value = String(row.price);
      tr.append(price);
      fragment.append(tr);
    }
    this.body.replaceChildren(fragment);
  }
}

/** Fill the sector table (the text alternative of the sector chart). */
export function renderSectorTable(table, sectors) {
  const fragment = document.createDocumentFragment();
  for (const s of sectors) {
    const tr = document.createElement("tr");
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = s.sector;
    tr.append(name, cell(String(s.count), "num"), cell(pct(s.weight), "num"));
    tr.dataset.sector = s.sector;
    tr.dataset.weight = String(s.weight);
    fragment.append(tr);
  }
  table.tBodies[0].replaceChildren(fragment);
}
