"""Several tasks at once: workers in parallel, the FIFO queue and its limit, replays of a task_id, GET /tasks."""

from __future__ import annotations

import logging
import time

from aipm_common.logging import RedactionFilter


def test_two_workers_run_two_tasks_at_the_same_time(pool_server):
    server = pool_server(size=2)
    a = server.in_background("[[sleep 1]] [[say a]]", "t-par-a")
    b = server.in_background("[[sleep 1]] [[say b]]", "t-par-b")
    # Both tasks are on a worker at the same moment (one after the other, the second would be queued): proven from
    # the pool's own view, not from wall time, which a loaded machine stretches.
    both = server.wait_health(lambda h: {w["current_task"] for w in h["workers"]} == {"t-par-a", "t-par-b"})
    assert both["queue_depth"] == 0
    ra, rb = a.result(timeout=10), b.result(timeout=10)
    assert ra.status_code == rb.status_code == 200
    assert {ra.json()["worker_id"], rb.json()["worker_id"]} == {1, 2}


def test_queue_overflow_is_429_with_retry_after(pool_server):
    server = pool_server(kiro_queue_limit=1)
    running = server.in_background("[[sleep 30]]", "t-q-run")  # cancelled below: nothing depends on its time
    server.wait_health(lambda h: h["workers"][0]["current_task"] == "t-q-run")
    waiting = server.in_background("[[say second]]", "t-q-wait")
    server.wait_health(lambda h: h["queue_depth"] == 1)
    r = server.execute("[[say third]]", "t-q-over")
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert "KIRO_QUEUE_LIMIT" in r.json()["detail"]
    assert r.json()["worker_id"] is None and r.json()["output"] == ""
    with server.client() as client:
        assert client.post("/tasks/t-q-run/cancel").status_code == 200
    assert running.result(timeout=30).status_code == 499
    assert waiting.result(timeout=30).status_code == 200
    # A refused task_id was not registered: sent again later, it runs.
    assert server.execute("[[say third]]", "t-q-over").status_code == 200


def test_queued_tasks_run_in_arrival_order(pool_server):
    # The order is read from the pool's own "task started" records, not by watching /health at the right moment.
    started: list[str] = []

    class Starts(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if (getattr(record, "fields", None) or {}).get("event") == "task_started":
                started.append(record.task_id)

    handler = Starts()
    handler.addFilter(RedactionFilter())  # puts the task's id on the record
    pool_log = logging.getLogger("ec2_services.worker_pool.pool")
    level = pool_log.level
    pool_log.addHandler(handler)
    pool_log.setLevel(logging.INFO)
    try:
        server = pool_server()
        futures = [server.in_background("[[sleep 30]]", "t-fifo-0")]  # cancelled once the others wait behind it
        server.wait_health(lambda h: h["workers"][0]["current_task"] == "t-fifo-0")
        for i in range(1, 4):
            futures.append(server.in_background(f"[[say {i}]]", f"t-fifo-{i}"))
            server.wait_health(lambda h, n=i: h["queue_depth"] == n)
        with server.client() as client:
            assert client.post("/tasks/t-fifo-0/cancel").status_code == 200
        assert [f.result(timeout=30).status_code for f in futures] == [499, 200, 200, 200]
    finally:
        pool_log.removeHandler(handler)
        pool_log.setLevel(level)
    assert started == [f"t-fifo-{i}" for i in range(4)]


def test_replayed_task_id_waits_for_the_running_task_and_never_runs_twice(pool_server):
    server = pool_server()
    a = server.in_background("[[sleep 0.6]] [[say once]]", "t-replay")
    server.wait_health(lambda h: h["workers"][0]["current_task"] == "t-replay")
    b = server.in_background("[[sleep 0.6]] [[say once]]", "t-replay")
    ra, rb = a.result(timeout=10), b.result(timeout=10)
    assert ra.status_code == rb.status_code == 200
    assert ra.json() == rb.json()
    rc = server.execute("[[sleep 0.6]] [[say once]]", "t-replay")
    assert rc.json() == ra.json()  # answered from the stored result: the agent ran the task once
    assert server.health()["workers"][0]["tasks_completed"] == 1


def test_get_task_shows_running_then_the_result(pool_server):
    server = pool_server()
    running = server.in_background("[[sleep 0.8]] [[say result]]", "t-get")
    server.wait_health(lambda h: h["workers"][0]["current_task"] == "t-get")
    with server.client() as client:
        view = client.get("/tasks/t-get").json()
        assert (view["state"], view["status"], view["worker_id"]) == ("running", "running", 1)
        answer = running.result(timeout=10).json()
        ended = client.get("/tasks/t-get").json()
        assert ended["state"] == "ended" and ended["http_status"] == 200
        assert {k: ended[k] for k in answer} == answer
        assert client.get("/tasks/unknown-task").status_code == 404


def test_stored_results_expire_after_the_ttl(pool_server):
    server = pool_server(kiro_result_ttl=0.3)
    assert server.execute("[[say first]]", "t-ttl").status_code == 200
    time.sleep(0.4)
    with server.client() as client:
        assert client.get("/tasks/t-ttl").status_code == 404
    assert server.execute("[[say first]]", "t-ttl").status_code == 200
    assert server.health()["workers"][0]["tasks_completed"] == 2
