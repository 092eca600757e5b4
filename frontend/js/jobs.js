// The jobs list: one card per job (JobView), followed while it is live (follow.js: a back-off poll, and its event
// stream where the API has one). The server's history (GET /api/jobs) when
// the API can list jobs: any browser sees every job and a reload loses nothing. Where it cannot (sqs dispatch: no
// host knows every job) the list is what this browser submitted, remembered in localStorage.
import { api, safeUrl } from "./api.js";
import { LIVE, STATUS_LABEL, byId, detailText, formatDuration, lastLines, setText } from "./dom.js";
import { Follower, changeKey } from "./follow.js";
import { needSignIn } from "./signin.js";

const STORE_KEY = "aipm.jobs.v1";
const LOG_LINES = 8;

// --- remembered jobs -------------------------------------------------------------------------------------------
const store = {
  load() {
    try {
      const items = JSON.parse(window.localStorage.getItem(STORE_KEY) || "[]");
      return Array.isArray(items) ? items.filter((j) => j && typeof j.job_id === "string") : [];
    } catch {
      return [];
    }
  },
  save(jobs) {
    try {
      const items = [...jobs.values()].map((j) => j.record);
      window.localStorage.setItem(STORE_KEY, JSON.stringify(items));
    } catch {
      // Private mode or a full store: the list still works for this visit.
    }
  },
};

// --- one job on the page ---------------------------------------------------------------------------------------
export class JobView {
  constructor(record, onForget) {
    this.record = record; // {job_id, repo, title, branch, pr_number, pr_url, submitted_at, status}
    this.seen = null; // the changeKey of the job's last answer
    this.follower = new Follower({ refresh: () => this.refresh(), eventsPath: () => api.eventsPath(record.job_id) });
    const node = byId("job-template").content.firstElementChild.cloneNode(true);
    this.node = node;
    node.dataset.jobId = record.job_id;
    this.el = {
      title: node.querySelector(".job-title"),
      status: node.querySelector(".job-status"),
      meta: node.querySelector(".job-meta"),
      detail: node.querySelector(".job-detail"),
      log: node.querySelector(".job-log"),
      links: node.querySelector(".job-links"),
      error: node.querySelector(".job-error"),
      cancel: node.querySelector(".cancel"),
      forget: node.querySelector(".forget"),
    };
    this.el.title.textContent = record.title || record.job_id;
    this.el.cancel.setAttribute("aria-label", `Cancel job ${record.title || record.job_id}`);
    this.el.forget.setAttribute("aria-label", `Remove job ${record.title || record.job_id} from the list`);
    this.el.cancel.addEventListener("click", () => this.cancel());
    this.el.forget.addEventListener("click", () => onForget(this));
    this.renderLinks(null);
    this.update({ status: record.status || "queued" });
  }

  get live() {
    return LIVE.has(this.record.status);
  }

  update(job) {
    const status = job.status || "queued";
    this.record.status = status;
    this.el.status.dataset.status = status;
    this.el.status.textContent = STATUS_LABEL[status] || status;
    this.node.dataset.status = status;
    const meta = [this.record.repo, this.record.branch].filter(Boolean);
    if (job.attempts > 1) meta.push(`attempt ${job.attempts}`);
    if (typeof job.duration_s === "number") meta.push(formatDuration(job.duration_s));
    setText(this.el.meta, meta.join(" · "));
    setText(this.el.detail, detailText(job)); // aria-live: only a real change is announced
    // The latest lines, kept once the job has ended (the job page has all of them).
    const lines = lastLines(job.log_tail, LOG_LINES) || this.el.log.textContent;
    setText(this.el.log, lines);
    this.el.log.hidden = !lines;
    this.renderLinks(job);
    this.el.cancel.hidden = !this.live || status === "dispatched"; // sqs mode: no API call reaches the host
    this.el.forget.hidden = this.live || jobs.fromServer; // the server's history would bring it back
  }

  renderLinks(job) {
    // Rebuilt only when they change, so a link that has keyboard focus keeps it while the job is polled.
    const prUrl = safeUrl(this.record.pr_url);
    const commit = (job && job.commit) || this.renderedCommit || null;
    const key = `${prUrl}|${commit}|${this.record.pr_number}`;
    if (key === this.linksKey) return;
    this.linksKey = key;
    this.renderedCommit = commit;
    const links = this.el.links;
    links.replaceChildren();
    const open = document.createElement("a");
    open.href = `#/jobs/${encodeURIComponent(this.record.job_id)}`;
    open.className = "job-open";
    open.textContent = "Open job";
    open.setAttribute("aria-label", `Open job ${this.record.title || this.record.job_id}: transcript and timeline`);
    links.append(open, document.createTextNode(" · "));
    if (prUrl) {
      const a = document.createElement("a");
      a.href = prUrl;
      a.className = "pr-link";
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = this.record.pr_number ? `Pull request #${this.record.pr_number}` : "Pull request";
      links.append(a);
    }
    if (commit) {
      const code = document.createElement("code");
      code.className = "commit";
      code.title = commit;
      code.textContent = commit.slice(0, 12);
      links.append(document.createTextNode(prUrl ? " · commit " : "commit "), code);
    }
  }

  showError(message) {
    this.el.error.textContent = message || "";
    this.el.error.hidden = !message;
  }

  // Follow the job: read it now (now: false: the caller has just read it) and again while it is live.
  follow({ now = true } = {}) {
    this.follower.start({ now });
  }

  // One read of the job; true when it changed. The following stops once the job has ended or is gone.
  async refresh() {
    let changed = false;
    try {
      const { data } = await api.job(this.record);
      this.showError("");
      const key = changeKey(data);
      changed = key !== this.seen;
      this.seen = key;
      this.update(data || {});
      jobs.persist();
    } catch (err) {
      if (err.status === 404) {
        this.showError(`${err.message}. The service may have been reset; remove this job from the list.`);
        this.record.status = "unknown";
        this.el.status.textContent = "Unknown";
        this.el.status.dataset.status = "unknown";
        this.el.cancel.hidden = true;
        this.el.forget.hidden = false;
        jobs.persist();
        this.stop();
        return false;
      }
      if (err.status === 401) {
        needSignIn(err.message);
      }
      this.showError(`Could not refresh: ${err.message}. Retrying…`);
    }
    if (!this.live) this.stop();
    return changed;
  }

  async cancel() {
    this.el.cancel.disabled = true;
    try {
      const { data } = await api.cancel(this.record.job_id);
      this.showError("");
      if (data && data.status) this.update(data);
    } catch (err) {
      this.showError(`Cancel failed: ${err.message}`);
    } finally {
      this.el.cancel.disabled = false;
    }
    this.follow();
  }

  stop() {
    this.follower.stop();
  }
}

// --- the list ------------------------------------------------------------------------------------------------
export const jobs = {
  views: new Map(),
  list: null,
  fromServer: false,
  filter: { repo: "", status: "" },
  nextBefore: null,
  loading: 0,
  addedWhileLoading: new Set(),

  init() {
    this.list = byId("jobs");
    for (const record of store.load()) this.add(record, { persist: false });
    byId("history-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      const form = event.currentTarget;
      this.filter = { repo: form.elements.repo.value.trim(), status: form.elements.status.value };
      this.loadHistory({ reset: true });
    });
    byId("history-more").addEventListener("click", () => this.loadHistory({ reset: false }));
  },

  add(record, { persist = true, older = false } = {}) {
    let view = this.views.get(record.job_id);
    if (view) {
      Object.assign(view.record, record);
      view.renderLinks(null);
    } else {
      view = new JobView(record, (v) => this.forget(v));
      this.views.set(record.job_id, view);
      if (older) this.list.append(view.node);
      else this.list.prepend(view.node);
    }
    if (!older) this.addedWhileLoading.add(record.job_id);
    this.updateEmpty();
    if (persist) this.persist();
    return view;
  },

  // Every card but those of jobs started on this page while the history was being read (it may not list them).
  clear() {
    for (const [id, view] of this.views) {
      if (this.addedWhileLoading.has(id)) continue;
      view.stop();
      view.node.remove();
      this.views.delete(id);
    }
  },

  // One page of the history, newest first; reset: from the newest job with the current filter.
  async loadHistory({ reset }) {
    const loading = ++this.loading;
    this.addedWhileLoading = new Set();
    const more = byId("history-more");
    const note = byId("history-note");
    more.disabled = true;
    try {
      const { data } = await api.history({ ...this.filter, before: reset ? null : this.nextBefore });
      if (loading !== this.loading) return;
      if (reset || !this.fromServer) this.clear();
      this.fromServer = true;
      for (const job of (data && data.jobs) || []) {
        const view = this.add(recordOf(job), { persist: false, older: true });
        view.seen = changeKey(job);
        view.update(job);
        if (view.live) view.follow({ now: false });
      }
      this.nextBefore = (data && data.next_before) || null;
      more.hidden = !this.nextBefore;
      const filtered = [this.filter.repo, STATUS_LABEL[this.filter.status]].filter(Boolean).join(", ");
      setText(note, filtered ? `Jobs of ${filtered}.` : "");
      this.updateEmpty();
      this.persist();
    } catch (err) {
      if (loading !== this.loading) return;
      if (err.status === 401) needSignIn(err.message);
      more.hidden = true;
      // sqs dispatch answers 400: the list stays what this browser submitted.
      setText(note, err.status === 400 && !this.filter.repo && !this.filter.status
        ? "This API cannot list every job (its jobs run from a queue): these are the jobs this browser submitted."
        : `Could not load the job history: ${err.message}`);
    } finally {
      if (loading === this.loading) more.disabled = false;
    }
  },

  forget(view) {
    view.stop();
    this.views.delete(view.record.job_id);
    view.node.remove();
    this.updateEmpty();
    this.persist();
    byId("title").focus();
  },

  persist() {
    store.save(this.views);
  },

  refreshAll() {
    for (const view of this.views.values()) view.follow();
  },

  updateEmpty() {
    const empty = byId("jobs-empty");
    empty.hidden = this.views.size > 0;
    setText(empty, this.filter.repo || this.filter.status ? "No job matches this filter."
      : "No jobs yet. Submit a story to start one.");
  },
};

// A job of the server's list as the jobs list remembers it.
function recordOf(job) {
  return {
    job_id: job.job_id,
    repo: job.repo,
    title: job.title || job.job_id,
    branch: job.branch,
    pr_number: job.pr_number,
    pr_url: job.pr_url,
    submitted_at: job.created_at,
    status: job.status,
  };
}

