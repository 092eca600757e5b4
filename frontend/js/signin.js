// What the page shows about signing in: the badge, the account (cognito), the sign-in card and its errors; and
// needSignIn, which any view calls when the API answers 401.
import { auth, cognito } from "./auth.js";
import { byId } from "./dom.js";

export function setBadge(text, kind) {
  const badge = byId("auth-badge");
  badge.textContent = text;
  badge.dataset.kind = kind;
  badge.hidden = !text;
}

export function showAccount() {
  const account = byId("account");
  if (auth.mode !== "cognito" || !cognito.ready()) {
    account.hidden = true;
    return;
  }
  const { name, email } = cognito.user();
  byId("who").textContent = email && name ? `${name} (${email})` : name || email || "signed in";
  account.hidden = false;
}

export function showSignInError(message) {
  const el = byId("sign-in-error");
  el.textContent = message || "";
  el.hidden = !message;
}

export function needSignIn(reason) {
  if (auth.mode === "none") auth.mode = "token";
  if (auth.mode === "cognito") cognito.forget();
  applyAuthMode(auth.mode);
  if (reason) {
    byId("sign-in-help").textContent = auth.mode === "cognito"
      ? `The API asked for sign-in (${reason}). Sign in again.`
      : `The API asked for sign-in (${reason}). Enter its UI token; it is kept in this tab's memory only.`;
  }
  setBadge("signed out", "signed-out");
}

export function applyAuthMode(mode) {
  auth.mode = mode;
  const signIn = byId("sign-in");
  const help = byId("sign-in-help");
  byId("token-form").hidden = mode !== "token";
  byId("cognito-sign-in").hidden = mode !== "cognito";
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

cognito.onRenewed = showAccount;
cognito.onRenewFailed = needSignIn;
