"""The shared HTTP edge: 413 over 1 MiB, JSON errors for bad bodies."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from aipm_common.http import BodyLimitMiddleware, install_edge
from tests.support.servers import serve_in_thread


class Body(BaseModel):
    name: str


@pytest.fixture(scope="module")
def base_url():
    app = FastAPI()
    install_edge(app)

    @app.post("/things")
    async def things(body: Body):
        return {"name": body.name}

    with serve_in_thread(app) as url:
        yield url


def test_body_over_one_mib_is_413(base_url):
    r = httpx.post(base_url + "/things", content=b"x" * (1024 * 1024 + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "detail" in r.json()


def test_chunked_body_over_one_mib_is_413(base_url):
    def gen():
        for _ in range(17):
            yield b"x" * 65536

    r = httpx.post(base_url + "/things", content=gen(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_a_declared_length_over_the_limit_is_413_before_the_app_or_the_body_is_touched():
    def run(content_length: bytes) -> tuple[list, list]:
        reached, sent = [], []

        async def app(scope, receive, send):
            reached.append(scope["path"])

        async def receive():
            raise AssertionError("the body was read")

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "path": "/things", "headers": [(b"content-length", content_length)]}
        asyncio.run(BodyLimitMiddleware(app, limit=10)(scope, receive, send))
        return reached, sent

    reached, sent = run(b"11")
    assert reached == [] and sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"detail": "request body over 10 bytes"}
    assert run(b"10") == (["/things"], [])  # at the limit: the app has it
    assert run(b"ten") == (["/things"], [])  # not a number: left to the streaming count


def test_non_json_body_is_422_with_detail(base_url):
    r = httpx.post(base_url + "/things", content=b"not json{", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "JSON" in r.json()["detail"]


def test_schema_mismatch_is_422_with_detail(base_url):
    r = httpx.post(base_url + "/things", json={"nom": 1})
    assert r.status_code == 422
    assert "name" in r.json()["detail"]


def test_unknown_route_is_json_404(base_url):
    r = httpx.get(base_url + "/nope")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not Found"}
