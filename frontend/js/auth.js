// How a request proves who sends it: none | token (the UI token, in memory) | cognito (the hosted UI's
// authorization-code flow with PKCE (S256), tokens in memory only).
//
// The tokens live in these objects only (never in storage); sessionStorage holds the PKCE verifier and state for the
// round trip to the hosted UI and back, and is emptied on return. The ID token is sent (it names the user); it is
// renewed with the refresh token a minute before it expires. What the page shows about it is signin.js's: it sets
// cognito.onRenewed and cognito.onRenewFailed.

const PKCE_KEY = "aipm.pkce.v1";
const REFRESH_EARLY_MS = 60_000;

export const auth = {
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

export const cognito = {
  domain: "",
  clientId: "",
  scopes: ["openid", "email", "profile"],
  tokens: null, // {id, access, refresh, expiresAt (ms)}
  timer: null,
  refreshing: null,
  onRenewed: () => {},
  onRenewFailed: () => {},

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
          this.onRenewed();
          return true;
        })
        .catch((err) => {
          this.onRenewFailed(`the sign-in could not be renewed: ${err.message}`);
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
