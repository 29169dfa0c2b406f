// Build (synchronous, or a background job with progress) and export buttons.

import { ApiError, filenameOf, request } from "./api.js";
import { pct } from "./format.js";

const POLL_MS = 250;
const POLL_LIMIT_MS = 60 * 60 * 1000; // stop watching a job after an hour

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Show an ApiError (title, status, detail, field) in a role=alert element; null hides it. */
export function showProblem(element, error) {
  if (!error) {
    element.hidden = true;
    element.replaceChildren();
    return;
  }
  const title = document.createElement("strong");
  title.className = "problem-title";
  title.textContent = error.title || "Error";
  const detail = document.createElement("span");
  detail.className = "problem-detail";
  detail.textContent = error.detail || error.message || "";
  const parts = [title, document.createTextNode(": "), detail];
  const meta = [];
  if (error.status) meta.push(`HTTP ${error.status}`);
  if (error.field) meta.push(`field: ${error.field}`);
  if (meta.length) {
    const small = document.createElement("span");
    small.className = "problem-meta";
    small.textContent = ` (${meta.join(", ")})`;
    parts.push(small);
  }
  element.replaceChildren(...parts);
  element.dataset.status = String(error.status || "");
  element.hidden = false;
}

/** The build and export controls. */
export class Actions {
  /**
   * @param {object} options
   * @param {() => {index: string, start: string, end: string}} options.selection
   * @param {(index: string) => Promise<void>} options.onBuilt  refresh after a build
   */
  constructor({ selection, onBuilt }) {
    this.selection = selection;
    this.onBuilt = onBuilt;
    this.buildButton = document.getElementById("build-button");
    this.buildAllButton = document.getElementById("build-all-button");
    this.outcomes = document.getElementById("build-outcomes");
    this.outcomesCaption = document.getElementById("build-outcomes-caption");
    this.exportButton = document.getElementById("export-button");
    this.asyncBox = document.getElementById("build-async");
    this.format = document.getElementById("export-format");
    this.status = document.getElementById("action-status");
    this.error = document.getElementById("action-error");
    this.job = document.getElementById("job");
    this.jobLabel = document.getElementById("job-label");
    this.jobProgress = document.getElementById("job-progress");
    this.jobStatus = document.getElementById("job-status");
    this.lastJob = null; // the last job followed to success (an export job's download_url)
    this.buildButton.addEventListener("click", () => this.build());
    this.buildAllButton.addEventListener("click", () => this.buildAll());
    this.exportButton.addEventListener("click", () => this.export());
  }

  say(text) {
    this.status.textContent = text;
  }

  fail(error) {
    this.say("");
    showProblem(this.error, error instanceof ApiError ? error : new ApiError({ title: "Error", detail: String(error.message || error) }));
  }

  /** Before a build: no stale problem, outcome or outcome list; both build buttons off. */
  starting(text) {
    showProblem(this.error, null);
    delete this.status.dataset.outcome;
    delete this.status.dataset.buildOutcome;
    this.outcomes.hidden = true;
    this.buildButton.disabled = this.buildAllButton.disabled = true;
    this.say(text);
  }

  /** POST /build-index: 200 with the result, or 202 with a job to follow. */
  async build() {
    const { index } = this.selection();
    const runAsync = this.asyncBox.checked;
    this.starting(`Building ${index}…`);
    try {
      const response = await request("/build-index", {
        method: "POST",
        body: { index, async: runAsync },
        accept: [202],
      });
      const body = await response.json();
      let result = body;
      if (response.status === 202) {
        result = await this.follow(body);
        if (!result) return;
      }
      const what = result.outcome === "unchanged" ? "unchanged (nothing new to compute)" : `built (${result.mode})`;
      const warnings = result.warnings?.length ? ` Warnings: ${result.warnings.join("; ")}.` : "";
      this.say(
        `Built ${result.index} through ${result.end_date}: ${what}; ${result.trading_days} trading days, ` +
          `${result.rebalances} rebalances, version ${result.version} (${Math.round(result.duration_ms)} ms).${warnings}`,
      );
      this.status.dataset.buildOutcome = result.outcome;
      await this.onBuilt(result.index);
      // after the page shows the new build (tests and scripts wait for this)
      this.status.dataset.outcome = "built";
    } catch (error) {
      this.fail(error);
    } finally {
      this.buildButton.disabled = this.buildAllButton.disabled = false;
    }
  }

  /** POST /builds: a job building every index; then each index's outcome. */
  async buildAll() {
    this.starting("Building every index…");
    try {
      const response = await request("/builds", { method: "POST", accept: [202] });
      const result = await this.follow(await response.json(), "Build-all job");
      if (!result) return;
      this.showOutcomes(result);
      const failed = result.outcomes.filter((o) => o.outcome === "failed").map((o) => o.index);
      this.say(
        `Build of every index finished: ${result.built} built, ${result.unchanged} unchanged, ` +
          `${result.failed} failed${failed.length ? ` (${failed.join(", ")})` : ""}.`,
      );
      this.status.dataset.buildOutcome = result.failed ? "failed" : "built";
      await this.onBuilt(null);
      this.status.dataset.outcome = "built-all";
    } catch (error) {
      this.fail(error);
    } finally {
      this.buildButton.disabled = this.buildAllButton.disabled = false;
    }
  }

  /** The outcome of each index of a POST /builds job, failures first. */
  showOutcomes(result) {
    const rows = [
      ...result.outcomes.filter((o) => o.outcome === "failed"),
      ...result.outcomes.filter((o) => o.outcome !== "failed"),
      ...(result.skipped || []).map((s) => ({ index: s.index, outcome: "skipped", mode: "", end_date: null, reason: s.reason })),
    ];
    const body = this.outcomes.querySelector("tbody");
    body.replaceChildren(
      ...rows.map((o) => {
        const tr = document.createElement("tr");
        tr.dataset.index = o.index;
        tr.dataset.outcome = o.outcome;
        const name = document.createElement("th");
        name.scope = "row";
        name.textContent = o.index;
        const cells = [
          ["outcome", o.outcome],
          ["mode", o.mode === "failed" ? "" : o.mode],
          ["through", o.end_date || ""],
          ["reason", o.reason || (o.warnings?.length ? `${o.warnings.length} warning(s): ${o.warnings.join("; ")}` : "")],
        ].map(([key, text]) => {
          const td = document.createElement("td");
          td.className = key;
          td.textContent = text;
          return td;
        });
        tr.append(name, ...cells);
        return tr;
      }),
    );
    const skipped = result.skipped?.length ? `, ${result.skipped.length} switched off` : "";
    this.outcomesCaption.textContent =
      `Build of every index: ${result.built} built, ${result.unchanged} unchanged, ${result.failed} failed${skipped}` +
      (result.failed ? " (failures first)" : "");
    this.outcomes.dataset.failed = String(result.failed);
    this.outcomes.hidden = false;
  }

  /** Poll GET /jobs/{id} until it ends; show stage and progress. Returns the result or null
   * (the whole job is kept in `lastJob`). */
  async follow(accepted, label = "Build job", failure = "Build failed") {
    this.job.hidden = false;
    this.job.dataset.jobId = accepted.job_id;
    this.jobLabel.textContent = `${label} ${accepted.job_id.slice(0, 8)}${accepted.joined ? " (joined a running build)" : ""}`;
    this.jobProgress.value = 0;
    this.jobProgress.removeAttribute("data-final");
    const seen = [];
    const started = Date.now();
    const statusUrl = new URL(accepted.status_url, window.location.href);
    const path = `${statusUrl.pathname}${statusUrl.search}`;
    for (;;) {
      const response = await request(path);
      const job = await response.json();
      const step = job.status === "running" ? `running: ${job.stage}` : job.status;
      if (seen[seen.length - 1] !== step) seen.push(step);
      this.jobProgress.value = job.progress;
      this.jobProgress.textContent = pct(job.progress);
      this.jobStatus.textContent = `${seen.join(" → ")} (${pct(job.progress)})`;
      this.job.dataset.status = job.status;
      if (job.status === "succeeded") {
        this.jobProgress.dataset.final = "succeeded";
        this.lastJob = job;
        return job.result;
      }
      if (job.status === "failed" || job.status === "interrupted") {
        // interrupted: the server restarted before the job finished; it can be submitted again
        this.jobProgress.dataset.final = job.status;
        const e = job.error || {};
        const title = job.status === "interrupted" ? `${label} interrupted` : failure;
        this.fail(new ApiError({ title, detail: e.detail, status: e.status, field: e.field, type: e.type }));
        return null;
      }
      if (Date.now() - started > POLL_LIMIT_MS) {
        this.say(`Still running after an hour: follow ${path} yourself.`);
        return null;
      }
      await sleep(POLL_MS);
    }
  }

  /** POST /export-data and save the file (a long window is an export job: followed, then
   * its file downloaded). */
  async export() {
    const { index, start, end } = this.selection();
    const format = this.format.value;
    showProblem(this.error, null);
    this.exportButton.disabled = true;
    this.say(`Exporting ${index} (${format})…`);
    try {
      let response = await request("/export-data", {
        method: "POST",
        body: { index, start_date: start || null, end_date: end || null, format },
        accept: [202],
      });
      if (response.status === 202) {
        if (!(await this.follow(await response.json(), "Export job", "Export failed"))) return;
        response = await request(this.lastJob.download_url);
      }
      const blob = await response.blob();
      const name = filenameOf(response, `${index}.${format === "xlsx" ? "xlsx" : "zip"}`);
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = name;
      link.hidden = true;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      this.say(`Exported ${name} (${Math.round(blob.size / 1024)} KiB).`);
      this.status.dataset.outcome = "exported";
    } catch (error) {
      this.fail(error);
    } finally {
      this.exportButton.disabled = false;
    }
  }
}
