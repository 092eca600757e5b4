// Small helpers for putting the API's values on the page: always as text (textContent), never as HTML; the job
// states and their words; durations and times. No state, no imports.

// The states a job is still moving through (the page keeps following it), and their words.
export const LIVE = new Set(["queued", "dispatched", "running", "pushing"]);
export const STATUS_LABEL = {
  queued: "Queued",
  dispatched: "Dispatched",
  running: "Running",
  pushing: "Pushing",
  succeeded: "Succeeded",
  failed: "Failed",
  no_changes: "No changes",
  cancelled: "Cancelled",
};

export function byId(id) {
  return document.getElementById(id);
}

// Written only when it changes, so an aria-live region announces a real change only.
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

export function detailText(job) {
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

export function lastLines(text, n) {
  if (!text) return "";
  return text.replace(/\s+$/, "").split("\n").slice(-n).join("\n");
}

export function formatDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

export function formatTime(iso) {
  const date = iso ? new Date(iso) : null;
  return date && !Number.isNaN(date.getTime()) ? date.toLocaleTimeString() : "";
}
