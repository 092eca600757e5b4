// Following a live job: read it again on a back-off schedule, and at once when the API's event stream says
// something happened.
//
// The stream is GET /api/jobs/{id}/events (Server-Sent Events), read with fetch() and a stream reader rather than
// EventSource: EventSource cannot send the Authorization header every API call carries, and a token in the address
// would end up in logs. Only the local API (python -m lambda_fn, AIPM_DISPATCH=http) gives one; the deployed API sits
// behind a Lambda function URL that buffers every answer, and with AIPM_DISPATCH=sqs no host streams every job: both
// answer 409, and after the first such answer the page stops asking and polls.
//
// The poll backs off while nothing changes (1 s → 2 → 5 → 10 s; 2 → 5 → 10 → 30 s with a stream open, which only
// catches what the stream does not carry: the agent's unfinished lines, the queue position), starts again from the
// first step on a change, and stops while the tab is hidden (document.visibilityState); a tab shown again reads
// every followed job at once.
import { api } from "./api.js";
import { auth } from "./auth.js";

const POLL_STEPS_MS = [1000, 2000, 5000, 10000];
const STREAM_POLL_STEPS_MS = [2000, 5000, 10000, 30000];
const KICK_MS = 100; // a burst of lines is one read
const STREAM_RETRY_MS = 5000;
const MAX_STREAM_RETRY_MS = 60000;
// HTTP/1.1 allows six connections per origin: three at most stay open as streams, one of them kept for the job page.
const MAX_STREAMS = 3;
const NO_STREAM = new Set([405, 409, 501]); // this API (or its dispatch mode) has no event stream

const streams = { supported: true, open: 0 };
const followers = new Set();

// What of a job's answer counts as a change: everything but its running duration, which grows on every read.
export function changeKey(job) {
  return JSON.stringify({ ...(job || {}), duration_s: undefined });
}

function hidden() {
  return document.visibilityState === "hidden";
}

export class Follower {
  // refresh: async () => whether anything changed (it shows its own errors and calls stop() once the job has ended).
  // eventsPath: () => the job's events path, or null. priority: the job page's follower may take the last stream.
  constructor({ refresh, eventsPath, priority = false }) {
    this.refresh = refresh;
    this.eventsPath = eventsPath;
    this.priority = priority;
    this.active = false;
    this.step = 0;
    this.timer = null;
    this.retryTimer = null;
    this.reading = false;
    this.again = false;
    this.retryMs = STREAM_RETRY_MS;
    this.streamAfter = 0; // Date.now() before which no stream is asked for (after a cut or a refusal)
    this.stream = null; // the AbortController of the open stream
    this.streaming = false; // the stream answered and is being read
  }

  // Start (or go on) following: a read now, or (now: false) after the first step, when the caller has just read
  // the job and seen it live. The stream is asked for once a read has shown the job live (an ended job needs none).
  start({ now = true } = {}) {
    const wasActive = this.active;
    this.active = true;
    followers.add(this);
    if (now) {
      this.kick(0);
    } else if (!wasActive) {
      this.step = 0;
      this.schedule();
      this.openStream();
    }
  }

  stop() {
    this.active = false;
    followers.delete(this);
    window.clearTimeout(this.timer);
    window.clearTimeout(this.retryTimer);
    this.closeStream();
  }

  get delay() {
    const steps = this.streaming ? STREAM_POLL_STEPS_MS : POLL_STEPS_MS;
    return steps[Math.min(this.step, steps.length - 1)];
  }

  schedule() {
    window.clearTimeout(this.timer);
    if (!this.active || hidden()) return;
    this.timer = window.setTimeout(() => this.read(), this.delay);
  }

  // Read soon and start the back-off again: a stream event, the tab shown again, a button.
  kick(wait = KICK_MS) {
    if (!this.active) return;
    this.step = 0;
    window.clearTimeout(this.timer);
    if (hidden()) return;
    this.timer = window.setTimeout(() => this.read(), wait);
  }

  async read() {
    if (this.reading) {
      this.again = true; // one more read once this one is answered
      return;
    }
    this.reading = true;
    let changed = false;
    try {
      changed = await this.refresh();
    } catch {
      changed = false;
    } finally {
      this.reading = false;
    }
    if (!this.active) return;
    if (this.again) {
      this.again = false;
      this.kick(0);
      return;
    }
    this.step = changed ? 0 : this.step + 1;
    this.schedule();
    this.openStream();
  }

  async openStream() {
    if (!this.active || this.stream || !streams.supported || hidden() || Date.now() < this.streamAfter) return;
    if (streams.open >= (this.priority ? MAX_STREAMS : MAX_STREAMS - 1)) return;
    const path = this.eventsPath();
    if (!path) return;
    const controller = new AbortController();
    this.stream = controller;
    streams.open += 1;
    try {
      const response = await fetch(api.url(path), {
        headers: { Accept: "text/event-stream", ...auth.headers() },
        credentials: "omit",
        cache: "no-store",
        signal: controller.signal,
      });
      const type = response.headers.get("Content-Type") || "";
      if (!response.ok || !type.startsWith("text/event-stream") || !response.body) {
        if (NO_STREAM.has(response.status)) streams.supported = false;
        if (response.status === 404) this.streamAfter = Infinity; // no such job (or an API without the route)
        return;
      }
      this.streaming = true;
      this.retryMs = STREAM_RETRY_MS;
      await readEvents(response.body, (name) => {
        if (name === "line" || name === "end") this.kick();
      });
    } catch {
      // Aborted (stopped, tab hidden) or cut: the poll goes on, and the stream is asked for again below.
    } finally {
      this.streamEnded(controller);
    }
  }

  streamEnded(controller) {
    streams.open -= 1;
    if (this.stream !== controller) return;
    this.stream = null;
    if (this.streaming) {
      this.streaming = false;
      this.kick(0); // the stream's end: the job has ended, or the stream was cut; either way read it now
    }
    if (!controller.signal.aborted && this.active && streams.supported) {
      // Cut, or refused for now (a 401 until sign-in): asked for again later, less often each time.
      this.streamAfter = Date.now() + this.retryMs;
      window.clearTimeout(this.retryTimer);
      this.retryTimer = window.setTimeout(() => {
        this.streamAfter = 0;
        this.openStream();
      }, this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, MAX_STREAM_RETRY_MS);
    }
    for (const other of followers) {
      if (other !== this && !other.stream) other.openStream(); // a stream slot is free again
    }
  }

  closeStream() {
    if (this.stream) this.stream.abort();
  }
}

// Each event's name (event:, default "message"), as it arrives; comments (the keep-alives) are not events.
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      let name = "message";
      let data = false;
      for (const line of buffer.slice(0, end).split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data = true;
      }
      if (data) onEvent(name);
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf("\n\n");
    }
  }
}

// A hidden tab neither polls nor holds streams; shown again, it reads every followed job at once.
document.addEventListener("visibilitychange", () => {
  for (const follower of followers) {
    if (hidden()) {
      window.clearTimeout(follower.timer);
      window.clearTimeout(follower.retryTimer);
      follower.closeStream();
    } else {
      follower.kick(0);
      follower.openStream();
    }
  }
});
