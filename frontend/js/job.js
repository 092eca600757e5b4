// The job page (#/jobs/{id}): status, timeline, links, runs of the branch, and the whole transcript, read a page at
// a time from GET /api/jobs/{id}/transcript and then followed for new lines while the job is live (follow.js: its
// event stream where the API has one, else a back-off poll); kept on the page after it ends. It scrolls with the
// newest line unless the reader scrolled up.
import { api, commitUrl, safeUrl } from "./api.js";
import { auth } from "./auth.js";
import { LIVE, STATUS_LABEL, detailText, formatDuration, formatTime, setText } from "./dom.js";
import { Follower, changeKey } from "./follow.js";
import { jobs } from "./jobs.js";
import { needSignIn } from "./signin.js";

// What a transcript line is, for its colour (the words say it too).
function lineKind(text) {
  if (/\bdenied\b|\b[1-9]\d* denied\b/.test(text)) return "denied";
  if (/stall/i.test(text)) return "watchdog";
  if (/attempt failed|trying again|retries/i.test(text)) return "retry";
  if (/\bapproved\b/.test(text)) return "approved";
  return text.startsWith("[aipm]") ? "event" : "agent";
}

export const jobPage = {
  id: null,
  record: null,
  after: 0,
  lines: [],
  complete: false,
  jobLive: true,
  follower: null, // reads the job while it is live (follow.js)
  jobKey: null, // the changeKey of the job's last answer
  liveText: "",
  generation: 0,
  follow: true, // the transcript scrolls with its newest line

  el(id) {
    return document.getElementById(id);
  },

  init() {
    const box = this.el("transcript");
    box.addEventListener("scroll", () => {
      const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
      this.follow = atEnd;
      this.el("transcript-paused").hidden = atEnd;
    });
    this.el("transcript-follow").addEventListener("click", () => {
      this.follow = true;
      this.el("transcript-paused").hidden = true;
      box.scrollTop = box.scrollHeight;
    });
    this.el("job-download").addEventListener("click", () => this.download());
    this.el("job-cancel").addEventListener("click", () => this.cancel());
    this.el("job-rerun").addEventListener("click", () => this.rerun());
  },

  open(jobId) {
    this.close();
    this.id = jobId;
    this.generation += 1;
    const known = jobs.views.get(jobId);
    this.record = known ? known.record : { job_id: jobId };
    this.after = 0;
    this.lines = [];
    this.complete = false;
    this.jobLive = true;
    this.jobKey = null;
    this.liveText = "";
    this.follow = true;
    this.el("transcript").replaceChildren();
    this.el("transcript-paused").hidden = true;
    this.el("job-timeline").replaceChildren();
    this.el("job-page-links").replaceChildren();
    this.linksKey = null;
    this.runsKey = null;
    this.el("job-runs").hidden = true;
    this.el("job-rerun").hidden = true;
    setText(this.el("job-page-title"), this.record.title || `Job ${jobId}`);
    setText(this.el("job-page-meta"), "");
    setText(this.el("job-page-detail"), "Loading…");
    this.showError("");
    this.el("job-view").hidden = false;
    document.body.dataset.view = "job";
    document.title = `AIPM · ${this.record.title || jobId}`;
    const follower = new Follower({ refresh: () => this.tick(follower), eventsPath: () => api.eventsPath(jobId),
      priority: true });
    this.follower = follower;
    follower.start();
  },

  close() {
    if (this.follower) this.follower.stop();
    this.follower = null;
    this.id = null;
    this.generation += 1;
    this.el("job-view").hidden = true;
    delete document.body.dataset.view;
    document.title = "AIPM · Generate Code & PR";
  },

  showError(message) {
    const el = this.el("job-page-error");
    el.textContent = message || "";
    el.hidden = !message;
  },

  // One read of the job and its new transcript lines; true when anything changed. The follower stops once the job
  // has ended and every line is on the page (or the job cannot be read: gone, or no transcript in this mode).
  async tick(follower) {
    const generation = this.generation;
    if (!auth.ready()) {
      this.showError("Sign in to see this job.");
      follower.stop();
      return false;
    }
    let changed = false;
    try {
      const { data } = await api.job(this.record);
      if (generation !== this.generation) return false;
      const key = changeKey(data);
      changed = key !== this.jobKey;
      this.jobKey = key;
      this.render(data || {});
      while (!this.complete) {
        const { data: page } = await api.transcript(this.id, this.after);
        if (generation !== this.generation) return false;
        changed = this.append(page) || changed;
        if (!page.lines.length) break;
      }
      this.showError("");
    } catch (err) {
      if (generation !== this.generation) return false;
      if (err.status === 401) needSignIn(err.message);
      if (err.status === 404 || err.status === 409) {
        this.showError(err.message);
        follower.stop();
        return false;
      }
      this.showError(`Could not refresh: ${err.message}. Retrying…`);
    }
    if (!this.jobLive && this.complete) follower.stop();
    return changed;
  },

  render(job) {
    const status = job.status || "queued";
    this.jobLive = LIVE.has(status);
    if (job.repo) this.record.repo = this.record.repo || job.repo;
    if (job.branch) this.record.branch = this.record.branch || job.branch;
    if (job.title) {
      this.jobTitle = job.title;
      setText(this.el("job-page-title"), this.record.title || job.title); // a page opened from its address
    }
    const badge = this.el("job-page-status");
    badge.dataset.status = status;
    setText(badge, STATUS_LABEL[status] || status);
    this.el("job-view").dataset.status = status;
    const meta = [job.repo, job.branch].filter(Boolean);
    if (job.attempts) meta.push(job.attempts === 1 ? "1 attempt" : `${job.attempts} attempts`);
    if (typeof job.duration_s === "number") meta.push(`took ${formatDuration(job.duration_s)}`);
    if (typeof job.credits === "number") meta.push(`${job.credits} credits`);
    if (job.tokens) meta.push(`${job.tokens.input.toLocaleString()} in / ${job.tokens.output.toLocaleString()} out tokens`);
    setText(this.el("job-page-meta"), meta.join(" · "));
    setText(this.el("job-page-detail"), detailText(job));
    this.renderTimeline(job.timeline || []);
    this.renderLinks(job);
    this.el("job-cancel").hidden = !this.jobLive || status === "dispatched";
    this.el("job-rerun").hidden = this.jobLive || !STATUS_LABEL[status];
    this.renderRuns(job.runs || []);
  },

  // Every run of the job's branch (the first job and each re-run), oldest first, each a link to its page.
  renderRuns(runs) {
    const box = this.el("job-runs");
    const key = JSON.stringify(runs.map((r) => [r.job_id, r.status]));
    if (key === this.runsKey) return;
    this.runsKey = key;
    box.replaceChildren();
    box.hidden = runs.length < 2;
    if (box.hidden) return;
    box.append(document.createTextNode("Runs on this branch: "));
    runs.forEach((run, i) => {
      if (i) box.append(document.createTextNode(" · "));
      const text = `${i + 1}. ${STATUS_LABEL[run.status] || run.status}`;
      if (run.job_id === this.id) {
        const current = document.createElement("strong");
        current.textContent = `${text} (this one)`;
        box.append(current);
      } else {
        const a = document.createElement("a");
        a.href = `#/jobs/${encodeURIComponent(run.job_id)}`;
        a.className = "run-link";
        a.dataset.jobId = run.job_id;
        a.textContent = text;
        box.append(a);
      }
    });
  },

  async rerun() {
    const button = this.el("job-rerun");
    button.disabled = true;
    try {
      const { data } = await api.rerun(this.record);
      const view = jobs.add({
        job_id: data.job_id,
        repo: data.repo || this.record.repo,
        title: this.record.title || this.jobTitle,
        branch: data.branch || this.record.branch,
        pr_number: data.pr_number,
        pr_url: data.pr_url,
        submitted_at: new Date().toISOString(),
        status: data.status || "queued",
      });
      view.follow();
      window.location.hash = `#/jobs/${encodeURIComponent(data.job_id)}`;
    } catch (err) {
      if (err.status === 401) needSignIn(err.message);
      this.showError(`Re-run failed: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  },

  renderTimeline(timeline) {
    const list = this.el("job-timeline");
    const key = JSON.stringify(timeline);
    if (key === this.timelineKey) return;
    this.timelineKey = key;
    list.replaceChildren();
    timeline.forEach((step, i) => {
      const li = document.createElement("li");
      li.dataset.status = step.status;
      const name = document.createElement("strong");
      name.textContent = STATUS_LABEL[step.status] || step.status;
      const time = document.createElement("time");
      time.dateTime = step.at || "";
      time.textContent = ` ${formatTime(step.at)}`;
      li.append(name, time);
      const next = timeline[i + 1];
      if (next && step.at && next.at) {
        const spent = (new Date(next.at) - new Date(step.at)) / 1000;
        li.append(document.createTextNode(` (${formatDuration(spent)})`));
      }
      list.append(li);
    });
  },

  renderLinks(job) {
    const prUrl = safeUrl(job.pr_url || this.record.pr_url);
    const prNumber = job.pr_number || this.record.pr_number;
    const commit = job.commit || null;
    const key = `${prUrl}|${commit}|${prNumber}`;
    if (key === this.linksKey) return;
    this.linksKey = key;
    const links = this.el("job-page-links");
    links.replaceChildren();
    const add = (href, text, cls) => {
      if (links.childNodes.length) links.append(document.createTextNode(" · "));
      const a = document.createElement("a");
      a.href = href;
      a.className = cls;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = text;
      links.append(a);
    };
    if (prUrl) add(prUrl, prNumber ? `Pull request #${prNumber}` : "Pull request", "pr-link");
    const commitHref = safeUrl(commitUrl(prUrl, commit));
    if (commitHref) add(commitHref, `Commit ${commit.slice(0, 12)} and its diff`, "commit-link");
    else if (commit) {
      const code = document.createElement("code");
      code.className = "commit";
      code.textContent = commit.slice(0, 12);
      links.append(document.createTextNode(links.childNodes.length ? " · commit " : "commit "), code);
    }
  },

  // The page's new lines and the agent's unfinished ones; true when the transcript changed.
  append(page) {
    const box = this.el("transcript");
    const follow = this.follow;
    let live = box.querySelector(".live");
    let changed = false;
    for (const line of page.lines || []) {
      if (line.id <= this.after) continue;
      changed = true;
      this.after = line.id;
      this.lines.push(line);
      const div = document.createElement("div");
      div.className = "line";
      div.dataset.kind = lineKind(line.text);
      const time = document.createElement("time");
      time.dateTime = line.at || "";
      time.textContent = formatTime(line.at);
      div.append(time, document.createTextNode(line.text));
      box.insertBefore(div, live);
    }
    if (typeof page.next === "number" && page.next > this.after) this.after = page.next;
    this.complete = Boolean(page.complete);
    const liveText = page.live ? page.live.replace(/\s+$/, "") : "";
    changed = changed || liveText !== this.liveText;
    this.liveText = liveText;
    if (liveText) {
      if (!live) {
        live = document.createElement("div");
        live.className = "live";
        live.setAttribute("aria-label", "The agent's latest lines, still arriving");
        box.append(live);
      }
      setText(live, liveText);
    } else if (live) {
      live.remove();
    }
    if (follow) box.scrollTop = box.scrollHeight;
    return changed;
  },

  text() {
    const header = [`AIPM job ${this.id}`, this.record.repo && `${this.record.repo} ${this.record.branch || ""}`]
      .filter(Boolean);
    const body = this.lines.map((l) => `${l.at || ""} ${l.text}`);
    return [...header, "", ...body, ""].join("\n");
  },

  download() {
    const url = URL.createObjectURL(new Blob([this.text()], { type: "text/plain;charset=utf-8" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = `aipm-job-${this.id}.txt`;
    document.body.append(a);
    a.click();
    a.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 1000);
  },

  async cancel() {
    const button = this.el("job-cancel");
    button.disabled = true;
    try {
      await api.cancel(this.id);
    } catch (err) {
      this.showError(`Cancel failed: ${err.message}`);
    } finally {
      button.disabled = false;
    }
    if (this.follower) this.follower.start();
  },
};

const JOB_ROUTE = /^#\/jobs\/([A-Za-z0-9][A-Za-z0-9._-]{0,119})$/;

export function route() {
  let match = null;
  try {
    match = JOB_ROUTE.exec(decodeURIComponent(window.location.hash));
  } catch {
    match = null;
  }
  if (match) {
    if (jobPage.id !== match[1]) jobPage.open(match[1]);
  } else if (jobPage.id) {
    jobPage.close();
  }
}

