"""Hangs and stalls: an agent that hangs (silent, Ctrl+C ignored) or goes silent ends within its timeout (+1 s) as a
504 from the pool, its session is replaced, and a job that met it ends failed — with the work the agent had already
written saved (wip) — and its PR carries a comment saying so."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.reliability.stack import FINAL, poll, record_figures

TASK_TIMEOUT = 3.0
STALL_TIMEOUT = 2.0


@pytest.mark.timeout(300)
def test_hung_and_silent_agents_end_within_their_timeout_and_the_pr_says_so(make_stack):
    stack = make_stack(pool_size=2)
    stack.start("pool", KIRO_TASK_TIMEOUT=str(TASK_TIMEOUT), KIRO_STALL_TIMEOUT=str(STALL_TIMEOUT))
    stack.start("processor", PR_MAX_ATTEMPTS="1")
    stack.start("api")
    pool = stack.client("pool")
    figures = {}
    # Directly at the pool: a hang with a per-task timeout, a silence past the stall timeout, a busy agent (spinner
    # output) past the task timeout.
    cases = [("hang", "[[hang]]", 1.5, 1.5), ("silent", "[[silent 30]]", None, STALL_TIMEOUT),
             ("busy", "[[sleep 30]]", None, TASK_TIMEOUT)]
    for name, prompt, timeout_s, limit in cases:
        sent = time.monotonic()
        response = pool.post("/execute", json={"prompt": prompt, "cwd": None, "task_id": f"t-{name}",
                                               "timeout_s": timeout_s})
        wall = time.monotonic() - sent
        body = response.json()
        assert response.status_code == 504 and body["status"] == "timeout", (name, response.status_code, body)
        assert body["duration_s"] <= limit + 1, (name, body)
        assert wall <= limit + 2, (name, wall)  # +1 s allowed, +1 s for HTTP and a loaded machine
        figures[f"{name}_limit_s"] = limit
        figures[f"{name}_ended_after_s"] = round(wall, 2)
    health = stack.wait_pool_idle(timeout=60)
    assert health["pool_size"] == 2 and sum(w["restarts"] for w in health["workers"]) >= len(cases)
    # Through the whole stack: the agent writes a file and then hangs.
    api = stack.client("api")
    made = {}
    for name, directive in (("hang", "[[write partial.txt half done]] [[hang]]"),
                            ("silent", "[[write quiet.txt half done]] [[silent 60]]")):
        response = api.post("/api/generate-code", json={"repo": "local/example", "title": f"Stuck {name}",
                                                        "description": directive, "acceptance_criteria": ["ends"],
                                                        "story_id": f"stuck-{name}"})
        assert response.status_code == 202, response.text
        made[name] = response.json()
    for name, created in made.items():
        job = poll(lambda c=created: (j := stack.processor_job(c["job_id"])) and j["status"] in FINAL and j, 90,
                   f"job {name} final")
        assert job["status"] == "failed", job
        assert "timeout" in job["error"].lower() or "timed out" in job["error"].lower() or \
            "stall" in job["error"].lower(), job["error"]
        limit = TASK_TIMEOUT if name == "hang" else STALL_TIMEOUT
        figures[f"job_{name}_duration_s"] = job["duration_s"]

        def commented(c=created):
            pull = httpx.get(stack.url("api") + f"/api/forge/local/example/pulls/{c['pr_number']}", timeout=30).json()
            return pull if pull["comments"] and "aipm:failed" in pull["labels"] else None

        pull = poll(commented, 60, f"PR of {name} commented")
        comment = pull["comments"][-1]["body"].lower()
        assert "fail" in comment and ("time" in comment or "stall" in comment), comment
        # The work the agent had written before it hung was saved on the branch (salvaged), not lost.
        log = stack.git("log", "--format=%s", f"refs/heads/{created['branch']}")
        files = stack.git("ls-tree", "--name-only", f"refs/heads/{created['branch']}").split()
        figures[f"job_{name}_salvaged"] = ("partial.txt" in files or "quiet.txt" in files)
        assert job["duration_s"] <= limit + 1 + 10, job  # the pool's limit, +1 s, + git on a loaded machine
        assert log
    record_figures("hangs", task_timeout_s=TASK_TIMEOUT, stall_timeout_s=STALL_TIMEOUT, **figures)
    assert all(figures[f"job_{n}_salvaged"] for n in made), figures
    assert stack.wait_pool_idle(timeout=60)["pool_size"] == 2
