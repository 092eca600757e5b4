"""Cancel (queued and running), retries with backoff, salvaged WIP commits, and failures that are not retried."""

from __future__ import annotations

import time

from tests.ec2_services.pr_processor.conftest import BRANCH, REPO
from tests.ec2_services.pr_processor.fake_pool import Plan


def test_cancel_queued_job_at_once_and_running_job_through_its_pool_task(start_processor, forge, fake_pool):
    fake_pool.pool_size = 1
    fake_pool.plan("j-run", Plan(files={"half.txt": "half done\n"}, hang=True))
    proc = start_processor()
    before = forge.tip(REPO, BRANCH)
    assert proc.submit("j-run").status_code == 202
    proc.wait("j-run", lambda j: j["status"] == "running" and "j-run.1" in fake_pool.tasks)
    assert proc.submit("j-wait", branch="aipm/story-2").status_code == 202
    assert proc.submit("j-wait2", branch="aipm/story-3").status_code == 202
    waiting = proc.job("j-wait")
    assert waiting["status"] == "queued" and waiting["queue_position"] == 1
    assert proc.job("j-wait2")["queue_position"] == 2
    assert proc.job("j-run")["queue_position"] is None

    started = time.monotonic()
    cancelled = proc.client.post("/api/jobs/j-wait/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert time.monotonic() - started < 2
    assert proc.job("j-wait2")["queue_position"] == 1

    cancelled = proc.client.post("/api/jobs/j-run/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert fake_pool.cancels == ["j-run.1"]
    assert forge.tip(REPO, BRANCH) == before  # a cancelled job pushes nothing
    again = proc.client.post("/api/jobs/j-run/cancel")
    assert again.status_code == 409 and "ended" in again.json()["detail"]
    # The freed capacity goes to the next queued job; the cancelled one never reached the pool.
    assert proc.wait("j-wait2")["status"] == "no_changes"
    assert "j-wait.1" not in fake_pool.tasks


def test_failed_attempts_are_retried_then_fail_with_the_work_salvaged_as_wip(start_processor, forge, fake_pool):
    fake_pool.plan(
        "j-flaky",
        Plan(files={"progress.txt": "attempt 1\n"}, status=504, output="thinking..."),
        Plan(files={"progress.txt": "attempt 2\n"}, status=502),
        Plan(files={"progress.txt": "attempt 3\n"}, status=504),
    )
    proc = start_processor(PR_MAX_ATTEMPTS="3")
    assert proc.submit("j-flaky").status_code == 202
    job = proc.wait("j-flaky")
    assert job["status"] == "failed" and job["attempts"] == 3
    assert "504" in job["error"] and "gave up after 3 attempts" in job["error"]
    assert "WIP commit" in job["error"]
    wips = [c for c in forge.log(REPO, BRANCH) if c.subject.startswith("wip:")]
    assert [c.subject for c in wips] == [f"wip: TASK.md (AIPM job j-flaky, attempt {n})" for n in (3, 2, 1)]
    assert job["commit"] == wips[0].sha == forge.tip(REPO, BRANCH)
    assert forge.show(REPO, BRANCH, "progress.txt") == "attempt 3\n"
    assert [b["task_id"] for b in fake_pool.executes] == ["j-flaky.1", "j-flaky.2", "j-flaky.3"]
    # Each attempt started on a clean worktree at the branch tip, which held the previous WIP commit.
    assert len({b["cwd"] for b in fake_pool.executes}) == 3
    assert "trying again" in job["log_tail"]


def test_a_transient_failure_then_success_ends_succeeded(start_processor, forge, fake_pool):
    fake_pool.plan("j-second", Plan(status=503), Plan(files={"ok.txt": "ok\n"}))
    proc = start_processor()
    assert proc.submit("j-second").status_code == 202
    job = proc.wait("j-second")
    assert job["status"] == "succeeded" and job["attempts"] == 2 and job["error"] is None
    assert [c.subject.startswith("wip:") for c in forge.log(REPO, BRANCH)][:1] == [False]


def test_the_job_error_carries_the_agents_own_words_not_only_the_code(start_processor, forge, fake_pool):
    why = ("no agent session could be started (the agent exited with status 1 before answering initialize; its "
           "stderr ends: error: agent 'aipm' not found: run `kiro-cli agent create aipm`); see the service log")
    fake_pool.plan("j-noagent", Plan(status=503, detail=why))
    proc = start_processor(PR_MAX_ATTEMPTS="1")
    assert proc.submit("j-noagent").status_code == 202
    job = proc.wait("j-noagent")
    assert job["status"] == "failed", job
    assert "worker pool answered 503 (agent_error): no agent session could be started" in job["error"]
    assert "agent 'aipm' not found: run `kiro-cli agent create aipm`" in job["error"]
    assert "agent 'aipm' not found" in job["log_tail"]


def test_unreachable_pool_is_retried_then_failed(start_processor, forge):
    proc = start_processor(WORKER_POOL_URL="http://127.0.0.1:9", PR_MAX_ATTEMPTS="2")
    assert proc.submit("j-nopool").status_code == 202
    job = proc.wait("j-nopool")
    assert job["status"] == "failed" and job["attempts"] == 2
    assert "unreachable" in job["error"]
    assert "waiting for it to come back" in job["log_tail"]  # each attempt first waited PR_POOL_DOWN_WAIT
    assert proc.health()["worker_pool"] == "unreachable"


def test_a_full_pool_is_waited_out_without_spending_attempts(start_processor, forge, fake_pool):
    fake_pool.busy("j-busy.1", 3)
    fake_pool.plan("j-busy", Plan(files={"ok.txt": "ok\n"}))
    proc = start_processor(PR_MAX_ATTEMPTS="1", PR_POOL_BUSY_WAIT="30")
    assert proc.submit("j-busy").status_code == 202
    job = proc.wait("j-busy")
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert [b["task_id"] for b in fake_pool.executes] == ["j-busy.1"] * 4  # three 429s, then taken
    assert "worker pool is full; waiting for a free worker" in job["log_tail"]


def test_a_pool_full_past_the_wait_costs_the_attempt(start_processor, forge, fake_pool):
    fake_pool.busy("j-full.1", 1000)
    proc = start_processor(PR_MAX_ATTEMPTS="1", PR_POOL_BUSY_WAIT="0.5")
    assert proc.submit("j-full").status_code == 202
    job = proc.wait("j-full")
    assert job["status"] == "failed" and job["attempts"] == 1
    assert "429" in job["error"]


def test_push_failure_is_retried_without_running_the_agent_again(start_processor, forge, fake_pool):
    bare = forge.bare(REPO)
    away = bare.with_name("app.git.away")

    def remote_goes_away(cwd):
        bare.rename(away)

    fake_pool.plan("j-push", Plan(files={"p.txt": "p\n"}, action=remote_goes_away))
    proc = start_processor(PR_RETRY_BASE_DELAY="2")
    assert proc.submit("j-push").status_code == 202
    # The remote comes back once the first push has failed, well inside the 2–4 s backoff before the next one.
    proc.wait("j-push", until=lambda j: "attempt failed" in j["log_tail"])
    away.rename(bare)
    job = proc.wait("j-push")
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    assert fake_pool.started_tasks("j-push") == ["j-push.1"]
    assert len(fake_pool.executes) == 1
    assert job["commit"] == forge.tip(REPO, BRANCH)
    assert "push failed" in job["log_tail"] and "pushing the recorded commit" in job["log_tail"]



def test_a_resend_the_pool_refuses_as_a_replay_is_signed_again_in_a_later_second(start_processor, forge, fake_pool):
    """A pool that restarted in under a second sees the re-send of a task it took before carry the same signature
    (same body, same second) and refuses it 409: the processor sends it once more in the next second, without
    spending an attempt."""
    fake_pool.refuse_replay("j-replay.1")
    fake_pool.plan("j-replay", Plan(files={"ok.txt": "ok\n"}))
    proc = start_processor(PR_MAX_ATTEMPTS="1")
    assert proc.submit("j-replay").status_code == 202
    job = proc.wait("j-replay")
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert [b["task_id"] for b in fake_pool.executes] == ["j-replay.1"] * 2
    assert "sending it again" in job["log_tail"]
