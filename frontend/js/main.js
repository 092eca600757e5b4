// AIPM web UI: the story form, Generate Code & PR, the jobs list and the job page. Native ES modules, no build step,
// no framework; every value from the API is put on the page as text (textContent), never as HTML.
//
// Modules: dom.js (text helpers, job states), auth.js (none | token | Cognito PKCE, tokens in memory only),
// signin.js (what the page shows about signing in), api.js (fetch + auth headers), jobs.js (the jobs list and its
// history), job.js (the job page #/jobs/{id}: transcript, timeline, links), form.js (the story form). This one reads
// config.json (apiUrl, authMode, cognito) and starts the page.
import { api } from "./api.js";
import { auth, cognito } from "./auth.js";
import { byId } from "./dom.js";
import { initForm } from "./form.js";
import { jobPage, route } from "./job.js";
import { jobs } from "./jobs.js";
import { applyAuthMode, showSignInError } from "./signin.js";

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

function initSignIn() {
  byId("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId("token");
    auth.token = input.value.trim() || null;
    input.value = "";
    applyAuthMode("token");
    if (auth.token) {
      byId("sign-in").hidden = true;
      jobs.refreshAll();
      jobs.loadHistory({ reset: true });
      if (jobPage.id) jobPage.open(jobPage.id);
    }
  });
  byId("sign-in-button").addEventListener("click", () => {
    showSignInError("");
    cognito.signIn().catch((err) => showSignInError(`Sign-in could not start: ${err.message}`));
  });
  byId("sign-out").addEventListener("click", () => cognito.signOut());
}

async function main() {
  jobs.init();
  initForm();
  initSignIn();
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
