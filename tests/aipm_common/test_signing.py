"""Request signing against a real FastAPI app over loopback, through the httpx Auth and by hand."""

from __future__ import annotations

import time

import httpx
import pytest
from fastapi import Depends, FastAPI

from aipm_common.http import install_edge
from aipm_common.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureVerifier,
    SigningAuth,
    receiver_key,
    signature,
)
from tests.support.servers import serve_in_thread

SECRET = "s3cret-for-signing-tests"


def make_app(clock=time.time) -> FastAPI:
    app = FastAPI()
    install_edge(app)
    verify = SignatureVerifier(SECRET, "worker-pool", clock=clock)

    @app.post("/execute", dependencies=[Depends(verify)])
    async def execute(body: dict):
        return {"ok": True, "echo": body}

    @app.post("/tasks/{task_id}/cancel", dependencies=[Depends(verify)])
    async def cancel(task_id: str):
        return {"cancelled": task_id}

    @app.get("/api/jobs", dependencies=[Depends(verify)])
    async def jobs(limit: int = 50):
        return {"limit": limit}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    return app


@pytest.fixture(scope="module")
def base_url():
    with serve_in_thread(make_app()) as url:
        yield url


# The window's edges are tested against a server whose clock stands still: with the real clock a request signed at
# now+301 (whole seconds) reaches a server a fraction of a second later, which may see it 300.x s ahead.
FROZEN_NOW = 1_800_000_000


@pytest.fixture(scope="module")
def frozen_url():
    with serve_in_thread(make_app(clock=lambda: float(FROZEN_NOW))) as url:
        yield url


def signed_headers(method: str, target: str, body: bytes, *, ts: int | None = None, receiver="worker-pool", secret=SECRET):
    ts = int(time.time()) if ts is None else ts
    sig = signature(receiver_key(secret, receiver), ts, method, target, body)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sig, "content-type": "application/json"}


def test_receiver_key_matches_spec_derivation():
    import hashlib
    import hmac

    assert receiver_key("abc", "pr-processor") == hmac.new(b"abc", b"pr-processor", hashlib.sha256).digest()
    with pytest.raises(ValueError):
        receiver_key("abc", "someone-else")


def test_signature_covers_timestamp_method_target_and_body():
    key = receiver_key("abc", "worker-pool")
    import hashlib
    import hmac

    expected = hmac.new(key, b'1700000000.POST./execute.{"a":1}', hashlib.sha256).hexdigest()
    assert signature(key, 1700000000, "post", "/execute", b'{"a":1}') == "sha256=" + expected


def test_httpx_auth_signed_request_passes(base_url):
    with httpx.Client(base_url=base_url, auth=SigningAuth(SECRET, "worker-pool")) as client:
        r = client.post("/execute", json={"prompt": "hi"})
        assert r.status_code == 200, r.text
        assert r.json()["echo"] == {"prompt": "hi"}
        r = client.get("/api/jobs", params={"limit": 5})
        assert r.status_code == 200 and r.json() == {"limit": 5}


async def test_async_httpx_auth_signed_request_passes(base_url):
    async with httpx.AsyncClient(base_url=base_url, auth=SigningAuth(SECRET, "worker-pool")) as client:
        r = await client.post("/tasks/t-1/cancel")
        assert r.status_code == 200 and r.json() == {"cancelled": "t-1"}


def test_signature_for_another_receiver_is_refused(base_url):
    with httpx.Client(base_url=base_url, auth=SigningAuth(SECRET, "pr-processor")) as client:
        r = client.post("/execute", json={"prompt": "hi"})
    assert r.status_code == 401
    assert "detail" in r.json()


def test_wrong_secret_is_refused(base_url):
    with httpx.Client(base_url=base_url, auth=SigningAuth("other-secret", "worker-pool")) as client:
        assert client.post("/execute", json={}).status_code == 401


@pytest.mark.parametrize("missing", [TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_missing_header_is_refused(base_url, missing):
    headers = signed_headers("POST", "/execute", b"{}")
    del headers[missing]
    r = httpx.post(base_url + "/execute", content=b"{}", headers=headers)
    assert r.status_code == 401
    assert "missing" in r.json()["detail"]


def test_unsigned_request_is_refused_but_health_is_open(base_url):
    assert httpx.post(base_url + "/execute", json={}).status_code == 401
    assert httpx.get(base_url + "/health").status_code == 200


@pytest.mark.parametrize("offset", [-301, 301])
def test_timestamp_outside_window_is_refused(frozen_url, offset):
    body = b'{"a": 1}'
    r = httpx.post(frozen_url + "/execute", content=body, headers=signed_headers("POST", "/execute", body, ts=FROZEN_NOW + offset))
    assert r.status_code == 401
    assert "300 s" in r.json()["detail"]


@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamp_at_the_window_edge_passes(frozen_url, offset):
    body = b'{"a": 1}'
    r = httpx.post(frozen_url + "/execute", content=body, headers=signed_headers("POST", "/execute", body, ts=FROZEN_NOW + offset))
    assert r.status_code == 200, r.text


def test_timestamp_far_from_the_real_clock_is_refused(base_url):
    body = b'{"a": 1}'
    r = httpx.post(base_url + "/execute", content=body, headers=signed_headers("POST", "/execute", body, ts=int(time.time()) + 600))
    assert r.status_code == 401


def test_timestamp_inside_window_passes(base_url):
    body = b'{"a": 1}'
    r = httpx.post(base_url + "/execute", content=body, headers=signed_headers("POST", "/execute", body, ts=int(time.time()) - 290))
    assert r.status_code == 200


def test_body_changed_after_signing_is_refused(base_url):
    headers = signed_headers("POST", "/execute", b'{"prompt": "a"}')
    r = httpx.post(base_url + "/execute", content=b'{"prompt": "b"}', headers=headers)
    assert r.status_code == 401


def test_signature_made_for_another_path_is_refused(base_url):
    body = b"{}"
    headers = signed_headers("POST", "/execute", body)
    assert httpx.post(base_url + "/tasks/x/cancel", content=body, headers=headers).status_code == 401
    headers = signed_headers("POST", "/tasks/x/cancel", body)
    assert httpx.post(base_url + "/tasks/x/cancel", content=body, headers=headers).status_code == 200


def test_signature_made_for_another_method_is_refused(base_url):
    headers = signed_headers("POST", "/api/jobs", b"")
    assert httpx.get(base_url + "/api/jobs", headers=headers).status_code == 401


def test_query_string_is_part_of_the_signature(base_url):
    headers = signed_headers("GET", "/api/jobs", b"")
    assert httpx.get(base_url + "/api/jobs?limit=5", headers=headers).status_code == 401
    headers = signed_headers("GET", "/api/jobs?limit=5", b"")
    assert httpx.get(base_url + "/api/jobs?limit=5", headers=headers).status_code == 200


def test_garbage_timestamp_is_refused(base_url):
    headers = signed_headers("POST", "/execute", b"{}")
    headers[TIMESTAMP_HEADER] = "12e3"
    assert httpx.post(base_url + "/execute", content=b"{}", headers=headers).status_code == 401


def test_insecure_verifier_without_secret_lets_requests_through():
    verifier = SignatureVerifier(None, "worker-pool")
    assert verifier.enabled is False
