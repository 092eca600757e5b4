"""The HTTP edge: signatures, bad input (400/422 with a JSON detail), cwd confinement, OpenAPI."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from aipm_common.signing import (
    PR_PROCESSOR,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WORKER_POOL,
    SigningAuth,
    receiver_key,
    signature,
)
from ec2_services.worker_pool.app import create_app
from ec2_services.worker_pool.settings import WorkerPoolSettings
from tests.conftest import SECRET
from tests.ec2_services.worker_pool.conftest import PoolServer
from tests.kiro_double import command
from tests.support.servers import serve_in_thread


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # One pool for the whole module: most of these requests are refused before they reach the agent.
    root = tmp_path_factory.mktemp("edge") / "workspaces"
    root.mkdir()
    settings = WorkerPoolSettings(
        aipm_shared_secret=SECRET, kiro_pool_size=1, kiro_command=command(), kiro_workspace_root=root,
        aipm_state_dir=root.parent / "state",
    )
    with serve_in_thread(create_app(settings, secret=SECRET)) as url:
        pool = PoolServer(url, root, settings, SECRET)
        pool.wait_all_idle()
        yield pool


def body(prompt="hello [[say hi]]", task_id="t-edge", **extra) -> dict:
    return {"prompt": prompt, "task_id": task_id, **extra}


def test_health_is_unsigned_and_reveals_no_secret(server):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200
    assert server.secret not in r.text
    assert set(r.json()) == {"status", "pool_size", "queue_depth", "workers"}


def test_unsigned_execute_is_401(server):
    r = httpx.post(server.url + "/execute", json=body())
    assert r.status_code == 401
    assert "signed" in r.json()["detail"]


def test_signature_made_for_another_path_is_401(server):
    payload = json.dumps(body(task_id="t-other-path")).encode()
    ts = str(int(time.time()))
    sig = signature(receiver_key(server.secret, WORKER_POOL), ts, "POST", "/tasks/t-other-path/cancel", payload)
    r = httpx.post(
        server.url + "/execute",
        content=payload,
        headers={TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig, "content-type": "application/json"},
    )
    assert r.status_code == 401


def test_signature_made_for_another_service_is_401(server):
    with httpx.Client(base_url=server.url, auth=SigningAuth(server.secret, PR_PROCESSOR)) as client:
        assert client.post("/execute", json=body(task_id="t-other-svc")).status_code == 401
        assert client.get("/tasks/t-other-svc").status_code == 401


def test_signed_requests_are_accepted(server):
    with server.client() as client:
        r = client.post("/execute", json=body(task_id="t-signed"))
        assert r.status_code == 200 and r.json()["status"] == "completed"
        assert client.get("/tasks/t-signed").status_code == 200


@pytest.mark.parametrize(
    "prompt",
    ["/clear", "  /quit now", "!rm -rf /", "escape \x1b[31m inside", "carriage\rreturn", "bell\x07", "nul\x00"],
)
def test_cli_commands_and_control_characters_are_400(server, prompt):
    with server.client() as client:
        r = client.post("/execute", json=body(prompt=prompt, task_id="t-bad-prompt"))
    assert r.status_code == 400
    assert r.json()["detail"]


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        ("\n/quit", "line 2"),
        (" \n/quit", "line 2"),
        ("\n\n/clear", "line 3"),
        ("do the task\n  !rm -rf /", "line 2"),
        ("do the task\n\t/quit", "line 2"),
        ("ok\x1b[2J", "control character '\\x1b'"),
        ("ok\r/quit", "control character '\\r'"),
    ],
)
def test_a_command_on_any_line_or_a_control_character_is_400_with_the_reason(server, prompt, reason):
    with server.client() as client:
        r = client.post("/execute", json=body(prompt=prompt, task_id="t-bad-line"))
    assert r.status_code == 400
    assert reason in r.json()["detail"]
    with server.client() as client:
        assert client.get("/tasks/t-bad-line").status_code == 404


def test_newlines_tabs_and_a_slash_inside_a_line_are_allowed(server):
    with server.client() as client:
        r = client.post("/execute", json=body(prompt="line\twith tab\nsee docs/x and a/b [[say ok]]", task_id="t-ok"))
    assert r.status_code == 200


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": ""},
        {"prompt": "x" * 65537},
        {"task_id": "-starts-with-dash"},
        {"task_id": "has space"},
        {"task_id": "x" * 129},
        {"timeout_s": 0},
        {"timeout_s": -1},
    ],
)
def test_out_of_schema_fields_are_422_with_detail(server, fields):
    with server.client() as client:
        r = client.post("/execute", json={**body(), **fields})
    assert r.status_code == 422
    assert r.json()["detail"]


def test_missing_task_id_is_422(server):
    with server.client() as client:
        r = client.post("/execute", json={"prompt": "hi"})
    assert r.status_code == 422
    assert "task_id" in r.json()["detail"]


def test_cwd_outside_the_workspace_root_is_400(server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    link = server.root / "escape-link"
    link.symlink_to(outside)
    cases = [str(outside), str(link), "relative/dir", str(server.root / "missing"), str(server.root / ".." / "edge")]
    (server.root / "file.txt").write_text("x")
    cases.append(str(server.root / "file.txt"))
    with server.client() as client:
        for cwd in cases:
            r = client.post("/execute", json=body(task_id="t-cwd-bad", cwd=cwd))
            assert r.status_code == 400, (cwd, r.text)
            assert "cwd" in r.json()["detail"]
        inside = server.root / "inside"
        inside.mkdir()
        assert client.post("/execute", json=body(task_id="t-cwd-ok", cwd=str(inside))).status_code == 200


def test_openapi_docs_are_served(server):
    assert httpx.get(server.url + "/docs").status_code == 200
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert {"/health", "/execute", "/tasks/{task_id}", "/tasks/{task_id}/cancel"} <= set(paths)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"prompt": 5}'])
def test_an_unsigned_request_is_401_whatever_its_body(server, raw):
    """FastAPI validates a body before a route's dependencies run: the edge checks the signature first, so an
    unsigned caller learns nothing about the schema."""
    r = httpx.post(server.url + "/execute", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 401, r.text
    assert "signed" in r.json()["detail"]


def test_a_signed_body_that_does_not_fit_is_still_422(server):
    with server.client() as client:
        r = client.post("/execute", content=b"[1, 2]", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "schema" in r.json()["detail"]
        r = client.post("/execute", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]


def test_signed_json_without_a_content_type_is_read_as_json(server):
    """Our own parts (and curl, urllib) may leave Content-Type out; a signed route reads the body as JSON anyway."""
    payload = json.dumps(body(task_id="t-no-ctype")).encode()
    ts = str(int(time.time()))
    sig = signature(receiver_key(server.secret, WORKER_POOL), ts, "POST", "/execute", payload)
    r = httpx.post(server.url + "/execute", content=payload, headers={TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    # Sent as a form, it is refused with what to do about it.
    sig = signature(receiver_key(server.secret, WORKER_POOL), ts, "POST", "/execute", payload)
    r = httpx.post(server.url + "/execute", content=payload, headers={
        TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig, "content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["detail"], r.text
