// AIPM web UI: the story form, Generate Code & PR, and the live jobs list. No build step, no framework.
//
// Owns: reading config.json (apiUrl, authMode, cognito), the auth seam (none | token | cognito: the hosted UI's
// authorization-code flow with PKCE, tokens in memory only), calls to the Lambda API, polling live jobs every second,
// the job history read from GET /api/jobs (paged, filtered by repo and status; localStorage only where the API cannot
// list jobs, as with sqs dispatch), and the job page (#/jobs/{id}: transcript, timeline, links). Every value from the API is put on the page as text
// (textContent), never as HTML.
"use strict";

const LIVE = new Set(["queued", "dispatched", "running", "pushing"]);
const STATUS_LABEL = {
  queued: "Queued",
  dispatched: "Dispatched",
  running: "Running",
  pushing: "Pushing",
  succeeded: "Succeeded",
  failed: "Failed",
  no_changes: "No changes",
  cancelled: "Cancelled",
};
const STORE_KEY = "aipm.jobs.v1";
const POLL_MS = 1000;
const MAX_POLL_MS = 8000;
const LOG_LINES = 8;
const HISTORY_PAGE = 20;

class ApiError extends Error {
  constructor(status, detail, data = null) {
    super(detail);
    this.status = status;
    this.data = data; // the API's JSON answer: a 422's detail says which field
  }
}

// --- auth: how a request proves who sends it. ------------------------------------------------------------------
const auth = {
  mode: "none",
  token: null, // kept in memory only, never in storage
  providers: {
    none: { headers: () => ({}), ready: () => true },
    token: {
      headers: () => (auth.token ? { Authorization: `Bearer ${auth.token}` } : {}),
      ready: () => Boolean(auth.token),
    },
  },
  headers() {
    const provider = this.providers[this.mode] || this.providers.none;
    return provider.headers();
  },
  ready() {
    const provider = this.providers[this.mode];
    return provider ? provider.ready() : false;
  },
};

// --- Cognito: authorization code + PKCE (S256) against the hosted UI ------------------------------------------
// The tokens live in this object only (never in storage); sessionStorage holds the PKCE verifier and state for the
// round trip to the hosted UI and back, and is emptied on return. The ID token is sent (it names the user); it is
// renewed with the refresh token a minute before it expires.
const PKCE_KEY = "aipm.pkce.v1";
const REFRESH_EARLY_MS = 60_000;

function b64url(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return window.btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(byteCount) {
  const bytes = new Uint8Array(byteCount);
  window.crypto.getRandomValues(bytes);
  return b64url(bytes);
}

async function s256(text) {
  return b64url(await window.crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

// A JWT's claims, for display only (the API verifies the token; the page never trusts these for anything).
function jwtClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(window.atob(part), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

function formPost(url, fields) {
  return fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields),
    credentials: "omit",
  });
}

const cognito = {
  domain: "",
  clientId: "",
  scopes: ["openid", "email", "profile"],
  tokens: null, // {id, access, refresh, expiresAt (ms)}
  timer: null,
  refreshing: null,

  configure(config) {
    const c = (config && typeof config.cognito === "object" && config.cognito) || {};
    this.domain = String(c.domain || config.cognitoDomain || "").replace(/\/+$/, "");
    this.clientId = String(c.clientId || config.cognitoClientId || "");
    if (Array.isArray(c.scopes) && c.scopes.length) this.scopes = c.scopes.map(String);
  },

  get configured() {
    return /^https?:\/\//.test(this.domain) && Boolean(this.clientId);
  },

  // The page's own URL (no query, no fragment) is where the hosted UI sends the user back, and the sign-out URL.
  redirectUri() {
    return window.location.origin + window.location.pathname;
  },

  headers() {
    return this.tokens ? { Authorization: `Bearer ${this.tokens.id}` } : {};
  },

  ready() {
    return Boolean(this.tokens);
  },

  user() {
    const claims = this.tokens ? jwtClaims(this.tokens.id) : {};
    const name = claims.name || claims.preferred_username || claims["cognito:username"] || "";
    return { name: String(name), email: typeof claims.email === "string" ? claims.email : "" };
  },

  async signIn() {
    const verifier = randomString(48); // 64 characters (RFC 7636: 43–128)
    const state = randomString(24);
    const redirectUri = this.redirectUri();
    window.sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state, redirectUri }));
    const params = new URLSearchParams({
      response_type: "code",
      client_id: this.clientId,
      redirect_uri: redirectUri,
      scope: this.scopes.join(" "),
      state,
      code_challenge: await s256(verifier),
      code_challenge_method: "S256",
    });
    window.location.assign(`${this.domain}/oauth2/authorize?${params}`);
  },

  // Back from the hosted UI with ?code=…&state=… (or ?error=…): exchange the code. Returns a problem or null.
  async completeSignIn() {
    const params = new URLSearchParams(window.location.search);
    if (!params.has("code") && !params.has("error")) return null;
    let saved = null;
    try {
      saved = JSON.parse(window.sessionStorage.getItem(PKCE_KEY) || "null");
    } catch {
      saved = null;
    }
    window.sessionStorage.removeItem(PKCE_KEY);
    // The code is good once; it does not stay in the address bar or the history.
    const clean = new URL(window.location.href);
    for (const key of ["code", "state", "error", "error_description"]) clean.searchParams.delete(key);
    window.history.replaceState(null, "", clean.pathname + clean.search + clean.hash);
    if (params.has("error")) return `Sign-in failed: ${params.get("error_description") || params.get("error")}`;
    if (!saved || !saved.state || saved.state !== params.get("state")) {
      return "Sign-in failed: the answer from the sign-in page does not match this tab's request. Sign in again.";
    }
    try {
      await this.tokenRequest({
        grant_type: "authorization_code",
        client_id: this.clientId,
        code: params.get("code"),
        redirect_uri: saved.redirectUri,
        code_verifier: saved.verifier,
      });
      return null;
    } catch (err) {
      return `Sign-in failed: ${err.message}`;
    }
  },

  async tokenRequest(fields) {
    let response;
    try {
      response = await formPost(`${this.domain}/oauth2/token`, fields);
    } catch (err) {
      throw new Error(`cannot reach the sign-in service at ${this.domain}: ${err.message}`);
    }
    let data = {};
    try {
      data = await response.json();
    } catch {
      data = {};
    }
    if (!response.ok || !data.id_token) {
      throw new Error(data.error_description || data.error || `the token endpoint answered ${response.status}`);
    }
    this.setTokens(data);
  },

  setTokens(data) {
    const claims = jwtClaims(data.id_token);
    const lifetime = (Number(data.expires_in) || 3600) * 1000;
    const expiresAt = Math.min(Date.now() + lifetime, claims.exp ? claims.exp * 1000 : Infinity);
    const refresh = data.refresh_token || (this.tokens && this.tokens.refresh) || null; // a refresh keeps the old one
    this.tokens = { id: data.id_token, access: data.access_token || null, refresh, expiresAt };
    this.schedule();
  },

  schedule() {
    window.clearTimeout(this.timer);
    if (!this.tokens || !this.tokens.refresh) return;
    const wait = Math.max(1000, this.tokens.expiresAt - Date.now() - REFRESH_EARLY_MS);
    this.timer = window.setTimeout(() => this.refresh(), wait);
  },

  // One refresh at a time; true when new tokens came back.
  refresh() {
    if (!this.tokens || !this.tokens.refresh) return Promise.resolve(false);
    if (!this.refreshing) {
      this.refreshing = this.tokenRequest({
        grant_type: "refresh_token",
        client_id: this.clientId,
        refresh_token: this.tokens.refresh,
      })
        .then(() => {
          showAccount();
          return true;
        })
        .catch((err) => {
          needSignIn(`the sign-in could not be renewed: ${err.message}`);
          return false;
        })
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  },

  forget() {
    window.clearTimeout(this.timer);
    this.tokens = null;
  },

  async signOut() {
    const refresh = this.tokens && this.tokens.refresh;
    this.forget();
    if (refresh) {
      try {
        await formPost(`${this.domain}/oauth2/revoke`, { token: refresh, client_id: this.clientId });
      } catch {
        // The hosted UI's logout below ends the session anyway.
      }
    }
    const params = new URLSearchParams({ client_id: this.clientId, logout_uri: this.redirectUri() });
    window.location.assign(`${this.domain}/logout?${params}`);
  },
};
auth.providers.cognito = cognito;

// --- the API ---------------------------------------------------------------------------------------------------
const api = {
  base: "",

  url(path) {
    return this.base.replace(/\/+$/, "") + path;
  },

  async call(method, path, body, extraHeaders = {}, renewed = false) {
    const headers = { Accept: "application/json", ...auth.headers(), ...extraHeaders };
    const init = { method, headers, credentials: "omit" };
    if (body !== undefined || method !== "GET") {
      // Every state-changing call is JSON: the API refuses anything a cross-site form could send.
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body === undefined ? {} : body);
    }
    let response;
    try {
      response = await fetch(this.url(path), init);
    } catch (err) {
      throw new ApiError(0, `Cannot reach the API at ${this.url("") || window.location.origin}: ${err.message}`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (response.status === 401 && auth.mode === "cognito" && !renewed && (await cognito.refresh())) {
      return this.call(method, path, body, extraHeaders, true); // the ID token had expired: once more, renewed
    }
    if (!response.ok) {
      throw new ApiError(response.status, describeError(response, data, text), data);
    }
    return { status: response.status, data };
  },

  generate(story, idempotencyKey) {
    return this.call("POST", "/api/generate-code", story, { "Idempotency-Key": idempotencyKey });
  },
  job(record) {
    return this.call("GET", `/api/jobs/${encodeURIComponent(record.job_id)}${jobQuery(record)}`);
  },
  cancel(jobId) {
    return this.call("POST", `/api/jobs/${encodeURIComponent(jobId)}/cancel`);
  },
  history({ repo, status, before }) {
    const query = new URLSearchParams({ limit: String(HISTORY_PAGE) });
    if (repo) query.set("repo", repo);
    if (status) query.set("status", status);
    if (before) query.set("before", String(before));
    return this.call("GET", `/api/jobs?${query}`);
  },
  rerun(record) {
    return this.call("POST", `/api/jobs/${encodeURIComponent(record.job_id)}/rerun${jobQuery(record)}`);
  },
  transcript(jobId, after) {
    return this.call("GET", `/api/jobs/${encodeURIComponent(jobId)}/transcript?after=${after}&limit=500`);
  },
};

// repo and branch let an API in sqs dispatch mode read the job from its pull request (http mode ignores them).
function jobQuery(record) {
  const query = new URLSearchParams();
  if (record.repo) query.set("repo", record.repo);
  if (record.branch) query.set("branch", record.branch);
  return query.toString() ? `?${query}` : "";
}

function describeError(response, data, text) {
  let detail = data && data.detail;
  if (Array.isArray(detail)) {
    detail = detail.map((d) => (d && d.msg ? `${(d.loc || []).slice(1).join(".")}: ${d.msg}` : String(d))).join("; ");
  } else if (detail && typeof detail === "object") {
    detail = JSON.stringify(detail);
  }
  if (!detail) {
    detail = text && text.length < 300 ? text.trim() : response.statusText || "no detail given";
  }
  const retry = response.headers.get("Retry-After");
  return `${response.status}: ${detail}${retry ? ` (retry after ${retry} s)` : ""}`;
}

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
class JobView {
  constructor(record, onForget) {
    this.record = record; // {job_id, repo, title, branch, pr_number, pr_url, submitted_at, status}
    this.timer = null;
    this.delay = POLL_MS;
    this.stopped = false;
    const node = document.getElementById("job-template").content.firstElementChild.cloneNode(true);
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

  poll() {
    if (this.stopped) return;
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.refresh(), this.delay);
  }

  async refresh() {
    if (this.stopped) return;
    try {
      const { data } = await api.job(this.record);
      this.delay = POLL_MS;
      this.showError("");
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
        return;
      }
      if (err.status === 401) {
        needSignIn(err.message);
      }
      this.showError(`Could not refresh: ${err.message}. Retrying…`);
      this.delay = Math.min(this.delay * 2, MAX_POLL_MS);
    }
    if (this.live) this.poll();
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
    if (this.live) this.poll();
    else await this.refresh();
  }

  stop() {
    this.stopped = true;
    window.clearTimeout(this.timer);
  }
}

function detailText(job) {
  switch (job.status) {
    case "queued":
      return job.queue_position ? `Waiting for a worker: position ${job.queue_position} in the queue.` : "Waiting to start.";
    case "dispatched":
      return "Sent to the job queue: a host takes it when a worker is free, and its result lands on the pull request.";
    case "running":
      return "The agent is working on TASK.md.";
    case "pushing":
      return "Committing and pushing the agent's changes.";
    case "succeeded":
      return job.commit ? "Done: the agent's commit is on the pull request's branch." : "Done.";
    case "failed":
      return `Failed: ${job.error || "no reason was given"}`;
    case "no_changes":
      return `The agent finished without changing anything${job.error ? `: ${job.error}` : "."}`;
    case "cancelled":
      return "Cancelled.";
    default:
      return "";
  }
}

function lastLines(text, n) {
  if (!text) return "";
  return text.replace(/\s+$/, "").split("\n").slice(-n).join("\n");
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

// An absolute http(s) URL for the API's pr_url (relative ones resolve against the API), or null.
function safeUrl(url) {
  if (!url) return null;
  try {
    const resolved = new URL(url, api.base ? api.base.replace(/\/*$/, "/") : window.location.href);
    return resolved.protocol === "http:" || resolved.protocol === "https:" ? resolved.href : null;
  } catch {
    return null;
  }
}

function formatDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

function formatTime(iso) {
  const date = iso ? new Date(iso) : null;
  return date && !Number.isNaN(date.getTime()) ? date.toLocaleTimeString() : "";
}

// What a transcript line is, for its colour (the words say it too).
function lineKind(text) {
  if (/\bdenied\b|\b[1-9]\d* denied\b/.test(text)) return "denied";
  if (/stall/i.test(text)) return "watchdog";
  if (/attempt failed|trying again|retries/i.test(text)) return "retry";
  if (/\bapproved\b/.test(text)) return "approved";
  return text.startsWith("[aipm]") ? "event" : "agent";
}

// Where a commit of the job's pull request is shown: the forge's commit page sits beside its pull pages on GitHub
// and on the local forge alike (…/pull/N → …/commit/SHA).
function commitUrl(prUrl, sha) {
  return prUrl && sha && /\/pull\/\d+\/?$/.test(prUrl) ? prUrl.replace(/\/pull\/\d+\/?$/, `/commit/${sha}`) : null;
}

// --- the job page (#/jobs/{id}) --------------------------------------------------------------------------------
// The whole transcript, read a page at a time from GET /api/jobs/{id}/transcript and then polled for new lines while
// the job is live; kept on the page after it ends. It follows the newest line unless the reader scrolled up.
const jobPage = {
  id: null,
  record: null,
  after: 0,
  lines: [],
  complete: false,
  jobLive: true,
  timer: null,
  generation: 0,
  follow: true,

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
    this.tick();
  },

  close() {
    window.clearTimeout(this.timer);
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

  async tick() {
    const generation = this.generation;
    if (!auth.ready()) {
      this.showError("Sign in to see this job.");
      return;
    }
    try {
      const { data } = await api.job(this.record);
      if (generation !== this.generation) return;
      this.render(data || {});
      while (!this.complete) {
        const { data: page } = await api.transcript(this.id, this.after);
        if (generation !== this.generation) return;
        this.append(page);
        if (!page.lines.length) break;
      }
      this.showError("");
    } catch (err) {
      if (generation !== this.generation) return;
      if (err.status === 401) needSignIn(err.message);
      if (err.status === 404 || err.status === 409) {
        this.showError(err.message);
        return;
      }
      this.showError(`Could not refresh: ${err.message}. Retrying…`);
    }
    if (generation === this.generation && (this.jobLive || !this.complete)) {
      this.timer = window.setTimeout(() => this.tick(), POLL_MS);
    }
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
      view.stopped = false;
      view.refresh();
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

  append(page) {
    const box = this.el("transcript");
    const follow = this.follow;
    let live = box.querySelector(".live");
    for (const line of page.lines || []) {
      if (line.id <= this.after) continue;
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
    window.clearTimeout(this.timer);
    this.tick();
  },
};

const JOB_ROUTE = /^#\/jobs\/([A-Za-z0-9][A-Za-z0-9._-]{0,119})$/;

function route() {
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

// --- the jobs list ---------------------------------------------------------------------------------------------
// The server's history (GET /api/jobs) when the API can list jobs: any browser sees every job and a reload loses
// nothing. Where it cannot (sqs dispatch: no host knows every job) the list is what this browser submitted.
const jobs = {
  views: new Map(),
  list: null,
  fromServer: false,
  filter: { repo: "", status: "" },
  nextBefore: null,
  loading: 0,
  addedWhileLoading: new Set(),

  init() {
    this.list = document.getElementById("jobs");
    for (const record of store.load()) this.add(record, { persist: false });
    document.getElementById("history-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      const form = event.currentTarget;
      this.filter = { repo: form.elements.repo.value.trim(), status: form.elements.status.value };
      this.loadHistory({ reset: true });
    });
    document.getElementById("history-more").addEventListener("click", () => this.loadHistory({ reset: false }));
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
    const more = document.getElementById("history-more");
    const note = document.getElementById("history-note");
    more.disabled = true;
    try {
      const { data } = await api.history({ ...this.filter, before: reset ? null : this.nextBefore });
      if (loading !== this.loading) return;
      if (reset || !this.fromServer) this.clear();
      this.fromServer = true;
      for (const job of (data && data.jobs) || []) {
        const view = this.add(recordOf(job), { persist: false, older: true });
        view.update(job);
        if (view.live) {
          view.stopped = false;
          view.poll();
        }
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
    document.getElementById("title").focus();
  },

  persist() {
    store.save(this.views);
  },

  refreshAll() {
    for (const view of this.views.values()) {
      view.stopped = false;
      view.refresh();
    }
  },

  updateEmpty() {
    const empty = document.getElementById("jobs-empty");
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

// --- the form --------------------------------------------------------------------------------------------------
function readStory(form) {
  const value = (name) => form.elements[name].value;
  const criteria = value("criteria")
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
  const story = {
    repo: value("repo").trim(),
    title: value("title").trim(),
    description: value("description"),
    acceptance_criteria: criteria,
  };
  const base = value("base_branch").trim();
  if (base) story.base_branch = base;
  story.story_id = value("story_id").trim() || defaultStoryId(story.repo, story.title);
  return story;
}

// The story id a story gets when the form's field is empty: the same repository and title give the same id in
// every browser and after a reload, so submitting the story again finds its pull request instead of opening another.
function defaultStoryId(repo, title) {
  const slug = `${repo} ${title}`.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
  return slug.slice(0, 100).replace(/-+$/, "") || "story";
}

function showDefaultStoryId(form) {
  const story = { repo: form.elements.repo.value.trim(), title: form.elements.title.value.trim() };
  setText(document.getElementById("story-id-default"), story.title ? defaultStoryId(story.repo, story.title)
    : "derived from the repository and title");
}

// "This story has pull request #n (status): open it or re-run it", with the link and the button that do so.
const storyExists = {
  record: null,

  init() {
    document.getElementById("story-exists-rerun").addEventListener("click", () => this.rerun());
  },

  show(record, detail) {
    this.record = record;
    setText(document.getElementById("story-exists-text"), detail ? `${detail[0].toUpperCase()}${detail.slice(1)}.` : "");
    document.getElementById("story-exists-open").href = `#/jobs/${encodeURIComponent(record.job_id)}`;
    document.getElementById("story-exists-rerun").hidden = LIVE.has(record.status) || !STATUS_LABEL[record.status];
    document.getElementById("story-exists").hidden = false;
  },

  hide() {
    document.getElementById("story-exists").hidden = true;
  },

  async rerun() {
    const button = document.getElementById("story-exists-rerun");
    button.disabled = true;
    try {
      const { data } = await api.rerun(this.record);
      const view = jobs.add({ ...this.record, job_id: data.job_id, status: data.status || "queued",
        submitted_at: new Date().toISOString() });
      view.stopped = false;
      view.refresh();
      this.hide();
      window.location.hash = `#/jobs/${encodeURIComponent(data.job_id)}`;
    } catch (err) {
      if (err.status === 401) needSignIn(err.message);
      showFormError(`Re-run failed — ${err.message}`);
    } finally {
      button.disabled = false;
    }
  },
};

// The summary above the button, and (given a field) the message again beside that field.
function showFormError(message, field, fieldMessage = message) {
  const el = document.getElementById("form-error");
  el.textContent = message || "";
  el.hidden = !message;
  for (const input of document.querySelectorAll("#story-form [aria-invalid]")) input.removeAttribute("aria-invalid");
  for (const slot of document.querySelectorAll("#story-form .field-error")) {
    slot.textContent = "";
    slot.hidden = true;
  }
  if (field) {
    field.setAttribute("aria-invalid", "true");
    const slot = document.getElementById(`${field.id}-error`);
    if (slot) {
      slot.textContent = fieldMessage;
      slot.hidden = false;
    }
    field.focus();
  }
}

// --- the form's limits: each field's counter, as the API's limits (maxlength, data-max-items/-line) say -------
function updateCounter(field) {
  const counter = document.getElementById(`${field.id}-count`);
  if (!counter) return;
  let text;
  let full;
  if (field.dataset.maxItems) {
    const lines = field.value.split("\n").map((l) => l.trim()).filter(Boolean);
    const longest = Math.max(0, ...lines.map((l) => l.length));
    const maxItems = Number(field.dataset.maxItems);
    const maxLine = Number(field.dataset.maxLine);
    text = `${lines.length} / ${maxItems} criteria`;
    if (longest > maxLine) text += ` · a line has ${longest} characters, over ${maxLine}`;
    full = lines.length > maxItems || longest > maxLine;
  } else {
    text = `${field.value.length} / ${field.maxLength} characters`;
    full = field.value.length >= field.maxLength;
  }
  setText(counter, text);
  counter.dataset.full = String(full);
}

function criteriaProblem(field) {
  const lines = field.value.split("\n").map((l) => l.trim()).filter(Boolean);
  const maxItems = Number(field.dataset.maxItems);
  const maxLine = Number(field.dataset.maxLine);
  if (lines.length > maxItems) return `At most ${maxItems} acceptance criteria (there are ${lines.length}).`;
  const long = lines.findIndex((l) => l.length > maxLine);
  return long < 0 ? null : `Acceptance criterion ${long + 1} has ${lines[long].length} characters: at most ${maxLine}.`;
}

// Which form field an API error is about: a 422's errors[].loc (body → field), or the words of a 400/403 detail.
const FIELD_OF = { repo: "repo", title: "title", description: "description", acceptance_criteria: "criteria",
  base_branch: "base_branch", story_id: "story_id" };

function fieldError(err, form) {
  const detail = err.data && err.data.detail;
  const errors = err.data && Array.isArray(err.data.errors) ? err.data.errors : detail; // a 422: [{loc, msg}]
  if (Array.isArray(errors)) {
    for (const item of errors) {
      const loc = (item && item.loc) || [];
      const name = loc[0] === "body" ? FIELD_OF[loc[1]] : null;
      if (name) {
        const where = typeof loc[2] === "number" ? ` (criterion ${loc[2] + 1})` : "";
        return { field: form.elements[name], message: `${item.msg}${where}` };
      }
    }
    return null;
  }
  if (typeof detail !== "string") return null;
  if (/^repo(sitory)? /.test(detail)) return { field: form.elements.repo, message: detail };
  if (/^base[_ ]branch /.test(detail)) return { field: form.elements.base_branch, message: detail };
  return null;
}

function newKey() {
  if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
  return `k-${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}`;
}

// The same story sent again (a double click, a retry after an error) carries the same Idempotency-Key, so the API
// answers with the pull request it already opened instead of opening a second one.
const idempotency = { story: null, key: null };
function keyFor(story) {
  const text = JSON.stringify(story);
  if (idempotency.story !== text) {
    idempotency.story = text;
    idempotency.key = newKey();
  }
  return idempotency.key;
}

async function onGenerate(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const story = readStory(form);
  if (!story.repo) return showFormError("Enter a repository (owner/name).", form.elements.repo);
  if (!story.title) return showFormError("Enter a title for the story.", form.elements.title);
  const tooMany = criteriaProblem(form.elements.criteria);
  if (tooMany) return showFormError(tooMany, form.elements.criteria);
  if (!auth.ready()) {
    return auth.mode === "cognito"
      ? showFormError("Sign in first: use the Sign in button above.", document.getElementById("sign-in-button"))
      : showFormError("Sign in first: enter the API's bearer token above.", document.getElementById("token"));
  }
  const button = document.getElementById("generate");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  showFormError("");
  storyExists.hide();
  try {
    const { data } = await api.generate(story, keyFor(story));
    const record = {
      job_id: data.job_id,
      repo: story.repo,
      title: story.title,
      branch: data.branch,
      pr_number: data.pr_number,
      pr_url: data.pr_url,
      submitted_at: new Date().toISOString(),
      status: data.status || "queued",
    };
    const view = jobs.add(record);
    view.stopped = false;
    view.refresh();
    if (data.existing) storyExists.show(record, data.detail);
  } catch (err) {
    if (err.status === 401) needSignIn(err.message);
    const about = fieldError(err, form);
    showFormError(`Generate Code & PR failed — ${err.message}`, about && about.field, about && about.message);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

// --- start-up --------------------------------------------------------------------------------------------------
function setBadge(text, kind) {
  const badge = document.getElementById("auth-badge");
  badge.textContent = text;
  badge.dataset.kind = kind;
  badge.hidden = !text;
}

function showAccount() {
  const account = document.getElementById("account");
  if (auth.mode !== "cognito" || !cognito.ready()) {
    account.hidden = true;
    return;
  }
  const { name, email } = cognito.user();
  document.getElementById("who").textContent = email && name ? `${name} (${email})` : name || email || "signed in";
  account.hidden = false;
}

function showSignInError(message) {
  const el = document.getElementById("sign-in-error");
  el.textContent = message || "";
  el.hidden = !message;
}

function needSignIn(reason) {
  if (auth.mode === "none") auth.mode = "token";
  if (auth.mode === "cognito") cognito.forget();
  applyAuthMode(auth.mode);
  if (reason) {
    document.getElementById("sign-in-help").textContent = auth.mode === "cognito"
      ? `The API asked for sign-in (${reason}). Sign in again.`
      : `The API asked for sign-in (${reason}). Enter its UI token; it is kept in this tab's memory only.`;
  }
  setBadge("signed out", "signed-out");
}

function applyAuthMode(mode) {
  auth.mode = mode;
  const signIn = document.getElementById("sign-in");
  const tokenForm = document.getElementById("token-form");
  const cognitoSignIn = document.getElementById("cognito-sign-in");
  const help = document.getElementById("sign-in-help");
  tokenForm.hidden = mode !== "token";
  cognitoSignIn.hidden = mode !== "cognito";
  if (mode === "none") {
    signIn.hidden = true;
    setBadge("local mode — no sign-in", "local");
  } else if (mode === "token") {
    signIn.hidden = false;
    help.textContent = "This API asks for its UI token. It is kept in this tab's memory only.";
    setBadge(auth.token ? "signed in (token)" : "signed out", auth.token ? "signed-in" : "signed-out");
  } else if (mode === "cognito" && cognito.configured) {
    signIn.hidden = cognito.ready();
    help.textContent = "Sign in with your AIPM account. Your session is kept in this tab's memory only.";
    setBadge(cognito.ready() ? "signed in" : "signed out", cognito.ready() ? "signed-in" : "signed-out");
  } else {
    signIn.hidden = true;
    setBadge(mode === "cognito" ? "sign-in is not configured (config.json has no cognito domain and client id)"
      : `sign-in mode "${mode}" is not supported by this page`, "signed-out");
  }
  showAccount();
}

async function loadConfig() {
  let config = {};
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) config = await response.json();
  } catch {
    config = {};
  }
  api.base = typeof config.apiUrl === "string" ? config.apiUrl : "";
  let mode = config.authMode;
  if (!mode) {
    // The API says which sign-in it wants on /health; a page with a bare config.json asks it.
    try {
      const health = await fetch(api.url("/health"), { cache: "no-store" });
      if (health.ok) mode = (await health.json()).auth;
    } catch {
      mode = undefined;
    }
  }
  return { mode: mode || "none", config };
}

async function main() {
  jobs.init();
  const storyForm = document.getElementById("story-form");
  storyForm.addEventListener("submit", onGenerate);
  storyForm.addEventListener("input", (event) => {
    showDefaultStoryId(storyForm);
    if (event.target.id) updateCounter(event.target);
  });
  for (const field of storyForm.querySelectorAll("input, textarea")) updateCounter(field);
  storyExists.init();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    auth.token = input.value.trim() || null;
    input.value = "";
    applyAuthMode("token");
    if (auth.token) {
      document.getElementById("sign-in").hidden = true;
      jobs.refreshAll();
      jobs.loadHistory({ reset: true });
      if (jobPage.id) jobPage.open(jobPage.id);
    }
  });
  document.getElementById("sign-in-button").addEventListener("click", () => {
    showSignInError("");
    cognito.signIn().catch((err) => showSignInError(`Sign-in could not start: ${err.message}`));
  });
  document.getElementById("sign-out").addEventListener("click", () => cognito.signOut());
  const { mode, config } = await loadConfig();
  if (mode === "cognito") {
    cognito.configure(config);
    if (cognito.configured) showSignInError(await cognito.completeSignIn());
  }
  applyAuthMode(mode);
  jobPage.init();
  window.addEventListener("hashchange", route);
  route();
  document.body.dataset.ready = "true";
  if (auth.ready()) {
    jobs.refreshAll();
    jobs.loadHistory({ reset: true });
  }
}

main();
