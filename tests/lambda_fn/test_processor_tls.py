"""8082 over TLS with a pinned certificate (issue 17): the Lambda's client talks to a real uvicorn serving TLS on
loopback and accepts only the certificate whose SHA-256 it was given (or read from SSM); any other is refused in the
handshake, before the signed request is sent."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from lambda_fn.pinning import normalize
from lambda_fn.processor import ProcessorClient, ProcessorError
from tests.support.servers import serve_in_thread

SECRET = "tls-test-shared-secret-0123456789"


def make_certificate(directory: Path, name: str) -> tuple[Path, Path, str]:
    """A key and self-signed certificate as the host's install makes them; returns (cert, key, SHA-256 of the DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert.fingerprint(hashes.SHA256()).hex()


@contextlib.contextmanager
def tls_processor(cert: Path, key: Path) -> Iterator[tuple[str, list[str]]]:
    """A stand-in PR processor under real uvicorn with TLS on 127.0.0.1; yields its https URL and the paths it got."""
    seen: list[str] = []
    app = FastAPI()

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict:
        seen.append(job_id)
        return {"id": job_id, "state": "done"}

    with serve_in_thread(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        yield url, seen


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, tuple[Path, Path, str]]:
    directory = tmp_path_factory.mktemp("tls")
    return {name: make_certificate(directory, name) for name in ("host", "impostor")}


def test_the_pinned_certificate_is_accepted(certificates):
    cert, key, fingerprint = certificates["host"]
    with tls_processor(cert, key) as (url, seen):
        client = ProcessorClient(url, SECRET, pin=fingerprint, attempts=1)
        try:
            assert client.get_job("job-1")["state"] == "done"
        finally:
            client.close()
    assert seen == ["job-1"]


def test_a_processor_with_another_certificate_is_refused_before_the_request_is_sent(certificates):
    cert, key, _ = certificates["impostor"]
    with tls_processor(cert, key) as (url, seen):
        client = ProcessorClient(url, SECRET, pin=certificates["host"][2], attempts=2, backoff=0)
        try:
            with pytest.raises(ProcessorError) as caught:
                client.get_job("job-1")
        finally:
            client.close()
    message = caught.value.detail
    assert caught.value.status == 502
    assert "is not the pinned one" in message and certificates["impostor"][2] in message, message
    assert certificates["host"][2] in message, "the error names both fingerprints"
    assert seen == [], "the signed request never reached the other server"


def test_the_pin_is_read_again_after_a_mismatch(certificates):
    """A rebuilt host publishes a new fingerprint: the retry reads the parameter again and gets through."""
    cert, key, fingerprint = certificates["host"]
    answers = iter([certificates["impostor"][2], fingerprint])
    reads: list[str] = []

    def read_pin() -> str:
        reads.append("read")
        return next(answers)

    with tls_processor(cert, key) as (url, seen):
        client = ProcessorClient(url, SECRET, pin=read_pin, attempts=2, backoff=0)
        try:
            assert client.get_job("job-2")["id"] == "job-2"
        finally:
            client.close()
    assert (len(reads), seen) == (2, ["job-2"])


def test_fingerprints_are_read_in_openssl_and_plain_form():
    plain = "ab" * 32
    assert normalize(":".join(["AB"] * 32)) == plain
    assert normalize(f"sha256 Fingerprint={':'.join(['AB'] * 32)}\n") == plain
    with pytest.raises(ValueError, match="not a SHA-256 certificate fingerprint"):
        normalize("unset: the host publishes its certificate's SHA-256 when its install runs")


def test_a_pin_that_cannot_be_read_is_a_clear_502_and_nothing_is_sent(certificates, monkeypatch):
    import boto3

    from lambda_fn.pinning import ssm_pin

    def denied(*args, **kwargs):
        raise RuntimeError("AccessDeniedException: not authorized to perform ssm:GetParameter")

    monkeypatch.setattr(boto3, "client", denied)
    cert, key, _ = certificates["host"]
    with tls_processor(cert, key) as (url, seen):
        client = ProcessorClient(url, SECRET, pin=ssm_pin("/aipm/cert"), attempts=1)
        with pytest.raises(ProcessorError) as caught:
            client.get_job("job-3")
        client.close()
    assert caught.value.status == 502 and "could not read the PR processor's certificate pin" in caught.value.detail
    assert "AccessDenied" in caught.value.detail and seen == []
