"""Slowloris on loopback: 200 connections that send their headers a byte at a time do not pin sockets past
``AIPM_HEADER_TIMEOUT``, and ``/health`` keeps answering while they are open."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.reliability.stack import record_figures

SOCKETS = 200


@pytest.mark.timeout(180)
def test_slow_headers_are_cut_off_after_the_header_timeout_and_health_keeps_answering(make_stack):
    stack = make_stack(pool_size=1)
    stack.start("processor", AIPM_HEADER_TIMEOUT="2")
    host, port = "127.0.0.1", stack.ports["processor"]
    attackers = []
    for _ in range(SOCKETS):
        sock = socket.create_connection((host, port), timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line that ends the headers
        sock.setblocking(False)
        attackers.append(sock)
    health_ms = []
    open_ = set(range(SOCKETS))
    deadline = time.monotonic() + 60  # a bound for a stuck test, not a measurement: the timeout is 2 s
    try:
        while open_ and time.monotonic() < deadline:
            for i in list(open_):
                try:
                    attackers[i].send(b"X")  # one more header byte: a slowloris keeps each socket "busy"
                    if attackers[i].recv(1024) == b"":
                        open_.discard(i)
                except BlockingIOError:
                    pass
                except OSError:  # reset or broken pipe: the server closed it
                    open_.discard(i)
            started = time.monotonic()
            response = httpx.get(stack.url("processor") + "/health", timeout=10)
            health_ms.append((time.monotonic() - started) * 1000)
            assert response.status_code == 200, response.text
            time.sleep(0.2)
        assert not open_, f"{len(open_)} of {SOCKETS} slow connections still open"
    finally:
        for sock in attackers:
            sock.close()
    record_figures("slowloris", sockets=SOCKETS, header_timeout_s=2, health_checks=len(health_ms),
                   health_ms_max=round(max(health_ms), 1), health_ms_median=round(sorted(health_ms)[len(health_ms) // 2], 1))
