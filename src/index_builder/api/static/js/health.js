// The health strip: service status, data freshness, last ingestion, cache state.

import { request } from "./api.js";
import { age, utcStamp } from "./format.js";

function setItem(id, state, text, title = "") {
  const item = document.getElementById(id);
  item.dataset.state = state;
  item.querySelector(".health-value").textContent = text;
  if (title) item.title = title;
  else item.removeAttribute("title");
}

let lastCache = null;

/** Remember the X-Cache of the last data read (shown with the cache state). */
export function noteCache(path, response) {
  const hit = response.headers.get("x-cache");
  if (hit) {
    lastCache = hit;
    const item = document.getElementById("health-cache");
    item.dataset.lastRead = hit;
    const value = item.querySelector(".health-value");
    value.textContent = value.textContent.replace(/ · last read .*$/, "") + ` · last read ${hit}`;
  }
}

/** Read GET /health/ready (503 is a body too) and show it. Returns the body or null. */
export async function refreshHealth() {
  let body;
  try {
    const response = await request("/health/ready", { accept: [503] });
    body = await response.json();
  } catch (error) {
    setItem("health-status", "down", `unavailable: ${error.detail || error.message}`);
    return null;
  }
  const c = body.components || {};
  setItem("health-status", body.status, `${body.status} (v${body.version})`);
  document.getElementById("version").textContent = `v${body.version}`;

  const fresh = c.freshness || {};
  if (!fresh.last_trading_day) {
    setItem("health-freshness", fresh.status || "unknown", "no market data", fresh.detail || "");
  } else if (fresh.stale) {
    setItem(
      "health-freshness",
      "degraded",
      `stale: through ${fresh.last_trading_day}, ${fresh.expected_session} missing (${age(fresh.data_age_seconds)} old)`,
      fresh.detail || "",
    );
  } else {
    setItem("health-freshness", fresh.status || "ok", `fresh through ${fresh.last_trading_day}`);
  }

  const ingest = c.ingestion || {};
  if (ingest.run_id === undefined || ingest.run_id === null) {
    setItem("health-ingestion", ingest.status || "unknown", "none recorded");
  } else {
    setItem(
      "health-ingestion",
      ingest.status || "unknown",
      `run ${ingest.run_id} ${ingest.state} ${utcStamp(ingest.finished_at || ingest.started_at)}`,
      ingest.detail || `${ingest.rows_accepted ?? 0} rows accepted, ${ingest.rows_rejected ?? 0} rejected`,
    );
  }

  const redis = c.redis || {};
  const cacheText = {
    up: "Redis up",
    down: "Redis down: reads from the database",
    disabled: "no Redis: reads from the database",
  }[redis.redis] || String(redis.status || "unknown");
  const state = redis.status === "disabled" ? "ok" : redis.status || "unknown";
  setItem("health-cache", state, cacheText + (lastCache ? ` · last read ${lastCache}` : ""), redis.detail || "");
  return body;
}
