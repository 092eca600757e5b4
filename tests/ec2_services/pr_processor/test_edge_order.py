"""The PR processor's edge: the signature is checked before the body, and signed JSON needs no Content-Type."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from aipm_common.signing import PR_PROCESSOR, SIGNATURE_HEADER, TIMESTAMP_HEADER, receiver_key, signature
from tests.ec2_services.pr_processor.conftest import BRANCH, REPO


@pytest.fixture
def proc(start_processor):
    return start_processor()


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"job_id": 5}'])
def test_an_unsigned_submission_is_401_whatever_its_body(proc, fake_pool, raw):
    r = httpx.post(proc.url + "/api/process-pr", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 401, r.text
    r = httpx.post(proc.url + "/api/process-pr", content=raw)  # no Content-Type either
    assert r.status_code == 401, r.text
    assert proc.client.get("/api/jobs").json()["jobs"] == []


def test_a_signed_submission_without_a_content_type_is_accepted(proc, fake_pool):
    payload = json.dumps({"job_id": "j-no-ctype", "repo": REPO, "branch": BRANCH, "task_file": "TASK.md"}).encode()
    ts = str(int(time.time()))
    sig = signature(receiver_key(proc.env["AIPM_SHARED_SECRET"], PR_PROCESSOR), ts, "POST", "/api/process-pr", payload)
    r = httpx.post(proc.url + "/api/process-pr", content=payload, headers={TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig})
    assert r.status_code == 202, r.text
    assert r.json()["job_id"] == "j-no-ctype"
