"""Secrets Manager, read once per container: the shared signing secret, the GitHub token, the App's private key, the
UI token.

Owns reading them at cold start, all at once and in parallel (``read_secrets``), each ARN at most once per container
(a cache), and registering every value with the log redaction filter before anything can log it.

The call is one signed HTTPS POST (``GetSecretValue``, AWS Signature Version 4) made with the standard library:
boto3's import and client set-up cost more CPU than the whole app's import, on every cold start
(docs/contracts.md, P5). The Lambda's credentials come from its environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), as the runtime sets them; without them (elsewhere) boto3 is used,
with its whole credential chain. ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` / ``AWS_ENDPOINT_URL`` point it at a local
Secrets Manager, as they do boto3. It must not log a value.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable, Mapping

from aipm_common.logging import register_secret
from aipm_common.settings import SettingsError

_KEYS = ("value", "secret", "token", "github_token", "shared_secret", "private_key", "privateKey")
_TIMEOUT_S = 10.0
_SERVICE = "secretsmanager"

_cache: dict[str, str] = {}
_cache_lock = threading.Lock()


def _region(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def sigv4_headers(*, url: str, host: str, region: str, target: str, body: bytes, access_key: str, secret_key: str,
                  session_token: str | None, now: datetime.datetime) -> dict[str, str]:
    """The headers of a signed AWS JSON 1.1 POST to ``url`` (path ``/``), Signature Version 4."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {"content-type": "application/x-amz-json-1.1", "host": host, "x-amz-date": amz_date,
               "x-amz-target": target}
    if session_token:
        headers["x-amz-security-token"] = session_token
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        "POST", "/", "", *(f"{name}:{headers[name].strip()}" for name in sorted(headers)), "", signed,
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{day}/{region}/{_SERVICE}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), _SERVICE), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
                                f"Signature={signature}")
    del headers["host"]  # urllib sets it from the URL, identically
    return headers


def _endpoint(env: Mapping[str, str], region: str) -> str:
    return (env.get("AWS_ENDPOINT_URL_SECRETS_MANAGER") or env.get("AWS_ENDPOINT_URL")
            or f"https://secretsmanager.{region}.amazonaws.com").rstrip("/")


def _get_secret_string(arn: str, env: Mapping[str, str]) -> str | None:
    """``GetSecretValue``'s SecretString, by a signed HTTPS call (or boto3 when the environment has no keys)."""
    region = _region(arn) or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    access_key, secret_key = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not (access_key and secret_key and region):
        import boto3  # noqa: PLC0415 - only where the environment carries no credentials (not on Lambda)

        client = boto3.client("secretsmanager", region_name=region)
        return client.get_secret_value(SecretId=arn).get("SecretString")
    import urllib.error  # noqa: PLC0415 - only when an ARN is configured
    import urllib.parse  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    url = _endpoint(env, region) + "/"
    body = json.dumps({"SecretId": arn}).encode()
    headers = sigv4_headers(url=url, host=urllib.parse.urlsplit(url).netloc, region=region,
                            target="secretsmanager.GetSecretValue", body=body, access_key=access_key,
                            secret_key=secret_key, session_token=env.get("AWS_SESSION_TOKEN"),
                            now=datetime.datetime.now(datetime.UTC))
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310 - https or a set endpoint
            return json.loads(response.read()).get("SecretString")
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())
        except ValueError:
            error = {}
        kind = str(error.get("__type", f"HTTP {exc.code}")).rsplit("#", 1)[-1]
        raise RuntimeError(f"{kind}: {error.get('message') or error.get('Message') or exc.reason}") from None


def _value(raw: str | None, variable: str) -> str:
    if not raw:
        raise SettingsError(f"{variable}: the secret has no string value; put one with put-secret-value")
    value = raw.strip()
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except ValueError:
            data = None
        if isinstance(data, dict):
            found = [data[k] for k in _KEYS if isinstance(data.get(k), str)]
            if not found and len(data) == 1 and isinstance(next(iter(data.values())), str):
                found = list(data.values())
            if not found:
                raise SettingsError(f"{variable}: the secret is a JSON object without a 'value' or 'token' key")
            value = found[0].strip()
    return value


def read_secret(arn: str, variable: str, *, env: Mapping[str, str] | None = None) -> str:
    """The secret's string (or its one value, when it holds a JSON object); ``variable`` names it in errors.
    Read once per container: a second call for the same ARN answers from memory."""
    with _cache_lock:
        if arn in _cache:
            return _cache[arn]
    try:
        raw = _get_secret_string(arn, os.environ if env is None else env)
    except Exception as exc:  # network, HTTP and botocore errors alike: each is a start-up failure naming the variable
        raise SettingsError(f"{variable}: could not read the secret ({type(exc).__name__}: {exc})") from None
    value = _value(raw, variable)
    register_secret(value)
    with _cache_lock:
        _cache[arn] = value
    return value


def read_secrets(wanted: Mapping[str, str], *, read: Callable[[str, str], str] = read_secret) -> dict[str, str]:
    """Every ``{variable: arn}`` read at once, in parallel (a cold start waits for the slowest, not the sum);
    the first failure is raised, naming its variable."""
    if len(wanted) <= 1:
        return {variable: read(arn, variable) for variable, arn in wanted.items()}
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - only with two ARNs or more

    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        futures = {variable: pool.submit(read, arn, variable) for variable, arn in wanted.items()}
    return {variable: future.result() for variable, future in futures.items()}


def forget_cached() -> None:
    """Drop the per-container cache (tests: a new container)."""
    with _cache_lock:
        _cache.clear()
