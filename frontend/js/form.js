// The story form: reading and checking it, each field's counter (the API's limits, as index.html's maxlength and
// data-max-items/-line say), Generate Code & PR with an Idempotency-Key, the API's errors beside their field, and
// "this story has pull request #n" with its Open and Re-run.
import { api } from "./api.js";
import { auth } from "./auth.js";
import { LIVE, STATUS_LABEL, byId, setText } from "./dom.js";
import { jobs } from "./jobs.js";
import { needSignIn } from "./signin.js";

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
  setText(byId("story-id-default"), story.title ? defaultStoryId(story.repo, story.title)
    : "derived from the repository and title");
}

// "This story has pull request #n (status): open it or re-run it", with the link and the button that do so.
const storyExists = {
  record: null,

  init() {
    byId("story-exists-rerun").addEventListener("click", () => this.rerun());
  },

  show(record, detail) {
    this.record = record;
    setText(byId("story-exists-text"), detail ? `${detail[0].toUpperCase()}${detail.slice(1)}.` : "");
    byId("story-exists-open").href = `#/jobs/${encodeURIComponent(record.job_id)}`;
    byId("story-exists-rerun").hidden = LIVE.has(record.status) || !STATUS_LABEL[record.status];
    byId("story-exists").hidden = false;
  },

  hide() {
    byId("story-exists").hidden = true;
  },

  async rerun() {
    const button = byId("story-exists-rerun");
    button.disabled = true;
    try {
      const { data } = await api.rerun(this.record);
      jobs.add({ ...this.record, job_id: data.job_id, status: data.status || "queued",
        submitted_at: new Date().toISOString() }).follow();
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
  const el = byId("form-error");
  el.textContent = message || "";
  el.hidden = !message;
  for (const input of document.querySelectorAll("#story-form [aria-invalid]")) input.removeAttribute("aria-invalid");
  for (const slot of document.querySelectorAll("#story-form .field-error")) {
    slot.textContent = "";
    slot.hidden = true;
  }
  if (field) {
    field.setAttribute("aria-invalid", "true");
    const slot = byId(`${field.id}-error`);
    if (slot) {
      slot.textContent = fieldMessage;
      slot.hidden = false;
    }
    field.focus();
  }
}

// --- the form's limits: each field's counter, as the API's limits (maxlength, data-max-items/-line) say -------
function updateCounter(field) {
  const counter = byId(`${field.id}-count`);
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
      ? showFormError("Sign in first: use the Sign in button above.", byId("sign-in-button"))
      : showFormError("Sign in first: enter the API's bearer token above.", byId("token"));
  }
  const button = byId("generate");
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
    jobs.add(record).follow();
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


// Wires the form: submit, the counters and the default story id as the user types, and the notice's Re-run.
export function initForm() {
  const storyForm = byId("story-form");
  storyForm.addEventListener("submit", onGenerate);
  storyForm.addEventListener("input", (event) => {
    showDefaultStoryId(storyForm);
    if (event.target.id) updateCounter(event.target);
  });
  for (const field of storyForm.querySelectorAll("input, textarea")) updateCounter(field);
  storyExists.init();
}
