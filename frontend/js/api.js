// Calls to the Lambda API: fetch with the auth headers, JSON in and out, and its errors as ApiError (the status and
// the API's own words). A 401 in cognito mode renews the ID token once and asks again.
import { auth, cognito } from "./auth.js";

const HISTORY_PAGE = 20;

export class ApiError extends Error {
  constructor(status, detail, data = null) {
    super(detail);
    this.status = status;
    this.data = data; // the API's JSON answer: a 422's detail says which field
  }
}

export const api = {
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
  // The job's event stream (follow.js reads it with fetch: it needs the auth headers EventSource cannot send).
  eventsPath(jobId) {
    return `/api/jobs/${encodeURIComponent(jobId)}/events`;
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

// An absolute http(s) URL for the API's pr_url (relative ones resolve against the API), or null.
export function safeUrl(url) {
  if (!url) return null;
  try {
    const resolved = new URL(url, api.base ? api.base.replace(/\/*$/, "/") : window.location.href);
    return resolved.protocol === "http:" || resolved.protocol === "https:" ? resolved.href : null;
  } catch {
    return null;
  }
}

// Where a commit of the job's pull request is shown: the forge's commit page sits beside its pull pages on GitHub
// and on the local forge alike (…/pull/N → …/commit/SHA).
export function commitUrl(prUrl, sha) {
  return prUrl && sha && /\/pull\/\d+\/?$/.test(prUrl) ? prUrl.replace(/\/pull\/\d+\/?$/, `/commit/${sha}`) : null;
}
