"""The PR processor's certificate, pinned: the Lambda talks to 8082 over TLS and accepts one certificate only.

The host makes its own key and self-signed certificate at install and publishes the certificate's SHA-256
fingerprint (of its DER bytes) to an SSM parameter (``PR_PROCESSOR_CERT_PARAMETER``); ``PR_PROCESSOR_CERT_SHA256``
gives it directly. The TLS handshake is checked against the pin before a byte of the request is sent, so a signed
request never reaches a server holding any other certificate. There is no CA and no host name to check (the host is
an IP address with a self-signed certificate): the pin is the whole trust.

Owns the SSL context and reading the pin; it must not make requests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
from collections.abc import Callable

_HEX = re.compile(r"^[0-9a-f]{64}$")


class PinMismatch(ssl.SSLError):
    """The server's certificate is not the pinned one (or there is no usable pin)."""


def normalize(fingerprint: str) -> str:
    """``AB:CD:…`` (openssl's form) or plain hex, as 64 lower-case hex digits; anything else raises ValueError."""
    value = fingerprint.strip().lower().replace(":", "").removeprefix("sha256=").removeprefix("sha256 fingerprint=")
    if not _HEX.fullmatch(value):
        raise ValueError(f"not a SHA-256 certificate fingerprint: {fingerprint[:80]!r}")
    return value


def fingerprint_of(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class PinnedContext(ssl.SSLContext):
    """A client context that accepts exactly the certificate whose SHA-256 is ``pin`` (checked in the handshake)."""

    pin: str = ""

    def wrap_socket(self, *args, **kwargs):  # the sync transport (httpcore) calls this; the handshake happens in it
        sock = super().wrap_socket(*args, **kwargs)
        der = sock.getpeercert(binary_form=True)
        got = fingerprint_of(der) if der else "none"
        if not hmac.compare_digest(got, self.pin):
            sock.close()
            raise PinMismatch(
                f"the PR processor's TLS certificate (SHA-256 {got}) is not the pinned one ({self.pin}): refusing to "
                "send the request. If the host was rebuilt, its new fingerprint is in the SSM parameter "
                "PR_PROCESSOR_CERT_PARAMETER names")
        return sock


def pinned_context(fingerprint: str) -> PinnedContext:
    context = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Self-signed, on an IP address: no chain and no name to check. The pin replaces both, and is always checked.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.pin = normalize(fingerprint)
    return context


def ssm_pin(parameter: str, region: str | None = None) -> Callable[[], str]:
    """Reads the pin from SSM when called (on the first request of a container, and after a mismatch)."""

    def read() -> str:
        import boto3

        try:
            value = boto3.client("ssm", region_name=region).get_parameter(Name=parameter)["Parameter"]["Value"]
        except Exception as exc:  # botocore's errors (access, throttling, network) all mean: no pin to check against
            raise PinMismatch(f"could not read the PR processor's certificate pin from the SSM parameter {parameter} "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from exc
        try:
            return normalize(value)
        except ValueError:
            raise PinMismatch(f"the SSM parameter {parameter} holds no certificate fingerprint yet ({value[:40]!r}): "
                              "the host publishes it when its install runs") from None

    return read
