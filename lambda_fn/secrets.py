"""Secrets Manager, read once per cold start: the shared signing secret, the GitHub token, the App's private key.

boto3 is imported only when an ARN is set, so a container configured by plain variables never pays for it. Every
value read is registered with the log redaction filter before anything can log it.
"""

from __future__ import annotations

import json

from aipm_common.logging import register_secret
from aipm_common.settings import SettingsError

_KEYS = ("value", "secret", "token", "github_token", "shared_secret", "private_key", "privateKey")


def _region(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else None


def read_secret(arn: str, variable: str) -> str:
    """The secret's string (or its one value, when it holds a JSON object); ``variable`` names it in errors."""
    import boto3  # noqa: PLC0415 - only when an ARN is configured

    try:
        client = boto3.client("secretsmanager", region_name=_region(arn))
        raw = client.get_secret_value(SecretId=arn).get("SecretString")
    except Exception as exc:  # botocore raises many kinds; each is a start-up failure naming the variable
        raise SettingsError(f"{variable}: could not read the secret ({type(exc).__name__}: {exc})") from None
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
    register_secret(value)
    return value
