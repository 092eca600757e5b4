"""Issue 20: the database keeps each job's last lines, its whole transcript is a gzip file per job beside it, read
back through the same calls (``log_tail``, the transcript pages, the SSE replay), deleted with the job by the
retention, named only from a valid job id, and appended to again after a crash. Real SQLite and real files."""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
import stat

import pytest

from ec2_services.pr_processor.events import JobEvents
from ec2_services.pr_processor.retention import DAY_S, Retention
from ec2_services.pr_processor.state_machine import JobState
from ec2_services.pr_processor.store import JobStore
from ec2_services.pr_processor.store.job_log import TAIL_LINES
from ec2_services.pr_processor.store.transcripts import Transcripts

NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    yield store
    store.close()


def _new(store: JobStore, job_id: str) -> None:
    store.jobs.create(job_id=job_id, repo="octo/app", branch=f"aipm/{job_id}", base_branch="main", pr_number=1,
                      task_file="TASK.md", callback_url=None, requested_by=None)


def _db_lines(path, job_id: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM job_log WHERE job_id = ?", (job_id,)).fetchone()[0]


def _append_in_batches(store: JobStore, job_id: str, count: int, *, batch: int = 7, start: int = 0) -> None:
    for first in range(start, start + count, batch):
        store.log.append(job_id, [f"line {n}" for n in range(first, min(first + batch, start + count))])


def test_the_database_keeps_the_tail_and_the_file_every_line(store, tmp_path):
    _new(store, "j-long")
    _append_in_batches(store, "j-long", 3 * TAIL_LINES + 5)
    total = 3 * TAIL_LINES + 5

    assert _db_lines(tmp_path / "jobs.sqlite", "j-long") == TAIL_LINES
    tail = [line for _, line in store.log.lines("j-long")]
    assert tail == [f"line {n}" for n in range(total - TAIL_LINES, total)]  # log_tail's lines, from the database

    whole = store.log.page("j-long", after_id=0, limit=2000)
    assert [line for _, _, line in whole] == [f"line {n}" for n in range(total)]
    ids = [line_id for line_id, _, _ in whole]
    assert ids == sorted(ids) and len(set(ids)) == total
    assert [line for _, line in store.log.lines("j-long", last=None)] == [f"line {n}" for n in range(total)]

    # A page at a time, across the file's part and the database's, gives the same lines once each.
    seen, after = [], 0
    while page := store.log.page("j-long", after_id=after, limit=33):
        seen += [line for _, _, line in page]
        after = page[-1][0]
    assert seen == [f"line {n}" for n in range(total)]


def test_the_transcript_file_is_private_gzip_that_zcat_reads_and_holds_redacted_lines(store, tmp_path):
    _new(store, "j-file")
    token = "ghp_" + "b" * 36
    store.log.append("j-file", ["first", f"agent printed {token}"])
    store.log.append("j-file", ["third"])
    path = tmp_path / "transcripts" / "j-file.jsonl.gz"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with gzip.open(path, "rt") as f:  # two appends, two members: one stream to any gzip reader
        rows = [json.loads(line) for line in f]
    assert [text for _, _, text in rows] == ["first", store.log.lines("j-file")[1][1], "third"]
    assert "***" in rows[1][2]
    assert token.encode() not in gzip.decompress(path.read_bytes())


def test_retention_deletes_the_transcript_with_the_job_and_any_file_left_without_one(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    for job_id, days in (("j-old", 40), ("j-new", 1)):
        _new(store, job_id)
        store.log.append(job_id, [f"{job_id} says hello"])
        store.jobs.transition(job_id, JobState.CANCELLED, ended_at=NOW - days * DAY_S)
    folder = tmp_path / "transcripts"
    # A file whose job is gone (a stop between a prune's commit and the file's removal).
    store.log.transcripts.append("j-gone", [(1, NOW, "orphan")])
    assert {p.name for p in folder.iterdir()} == {"j-old.jsonl.gz", "j-new.jsonl.gz", "j-gone.jsonl.gz"}

    assert Retention(store, days=30, clock=lambda: NOW).run_once() == 1

    assert {p.name for p in folder.iterdir()} == {"j-new.jsonl.gz"}
    assert [line for _, _, line in store.log.page("j-new")] == ["j-new says hello"]
    assert store.log.page("j-old") == []
    store.close()


@pytest.mark.parametrize("bad", ["../j-a", "j-a/../../x", "..", ".hidden", "j-a\n", "", "a" * 121, "j a"])
def test_a_job_id_that_is_not_one_never_becomes_a_file_name(store, tmp_path, bad):
    with pytest.raises(ValueError):
        store.log.append(bad, ["escape"])
    with pytest.raises(ValueError):
        store.log.transcripts.path(bad)
    assert _db_lines(tmp_path / "jobs.sqlite", bad) == 0  # nothing stored either
    assert not list(tmp_path.rglob("*.jsonl.gz"))


def test_each_job_writes_only_its_own_file(store, tmp_path):
    for job_id in ("j-a", "j-a.jsonl", "j-ab"):
        _new(store, job_id)
        store.log.append(job_id, [f"from {job_id}"])
    for job_id in ("j-a", "j-a.jsonl", "j-ab"):
        assert [line for _, _, line in store.log.transcripts.read(job_id)] == [f"from {job_id}"]
    assert sorted(p.name for p in (tmp_path / "transcripts").iterdir()) == [
        "j-a.jsonl.gz", "j-a.jsonl.jsonl.gz", "j-ab.jsonl.gz"]


def test_a_restart_after_an_append_cut_short_keeps_appending_and_loses_nothing(tmp_path):
    db = tmp_path / "jobs.sqlite"
    store = JobStore(db)
    _new(store, "j-crash")
    _append_in_batches(store, "j-crash", TAIL_LINES + 20)
    store.close()
    path = tmp_path / "transcripts" / "j-crash.jsonl.gz"
    whole = path.stat().st_size
    # The process died in the middle of writing a member: half of one is at the end of the file.
    member = gzip.compress(b'[999999,0,"never finished"]\n' * 50)
    with path.open("ab") as f:
        f.write(member[: len(member) // 2])

    store = JobStore(db)  # the restart
    _append_in_batches(store, "j-crash", 2 * TAIL_LINES, start=TAIL_LINES + 20)
    total = 3 * TAIL_LINES + 20
    assert [line for _, _, line in store.log.page("j-crash", limit=2000)] == [f"line {n}" for n in range(total)]
    with gzip.open(path, "rt") as f:  # the torn member was cut off: the whole file reads again
        assert sum(1 for _ in f) == total
    assert path.stat().st_size > whole
    store.close()


def test_lines_the_database_got_and_the_file_did_not_reach_it_before_they_leave_the_database(tmp_path):
    """A crash between the two writes (or a job logged before transcripts were files): the next process's first
    append writes them into the file, so cutting the database to its tail loses none."""
    db = tmp_path / "jobs.sqlite"
    store = JobStore(db)
    _new(store, "j-gap")
    store.log.append("j-gap", ["in both"])
    store.close()
    with sqlite3.connect(db) as raw:
        raw.executemany("INSERT INTO job_log (job_id, ts, line) VALUES ('j-gap', 1.0, ?)",
                        [(f"database only {n}",) for n in range(TAIL_LINES + 10)])

    store = JobStore(db)
    store.log.append("j-gap", ["after the restart"])
    expected = ["in both", *(f"database only {n}" for n in range(TAIL_LINES + 10)), "after the restart"]
    assert _db_lines(db, "j-gap") == TAIL_LINES
    assert [line for _, _, line in store.log.transcripts.read("j-gap")] == expected
    assert [line for _, _, line in store.log.page("j-gap", limit=1000)] == expected
    store.close()


def test_a_file_that_cannot_be_written_leaves_every_line_in_the_database_until_it_can(store, tmp_path, monkeypatch):
    _new(store, "j-full")
    failing = True
    real_append = Transcripts.append

    def append(self, job_id, rows):
        if failing:
            raise OSError(28, "No space left on device")
        return real_append(self, job_id, rows)

    monkeypatch.setattr(Transcripts, "append", append)
    _append_in_batches(store, "j-full", TAIL_LINES + 30)
    assert _db_lines(tmp_path / "jobs.sqlite", "j-full") == TAIL_LINES + 30  # nothing cut: the file has none
    failing = False
    store.log.append("j-full", ["disk freed"])
    expected = [*(f"line {n}" for n in range(TAIL_LINES + 30)), "disk freed"]
    assert [line for _, _, line in store.log.transcripts.read("j-full")] == expected
    assert _db_lines(tmp_path / "jobs.sqlite", "j-full") == TAIL_LINES


def test_the_event_stream_replays_the_whole_transcript_of_an_ended_job(store):
    _new(store, "j-sse")
    _append_in_batches(store, "j-sse", 2 * TAIL_LINES)
    store.jobs.transition("j-sse", JobState.CANCELLED)
    events = JobEvents(store.log, store.jobs)

    async def replay() -> list[str]:
        return [item[1] async for item in events.stream("j-sse") if item is not None]

    assert asyncio.run(replay()) == [f"line {n}" for n in range(2 * TAIL_LINES)]


def test_a_transcript_directory_that_cannot_be_made_does_not_stop_the_store(tmp_path):
    blocked = tmp_path / "transcripts"
    blocked.write_text("a file where the directory should be")
    store = JobStore(tmp_path / "jobs.sqlite", transcripts=blocked)
    _new(store, "j-nodir")
    _append_in_batches(store, "j-nodir", TAIL_LINES + 5)
    assert [line for _, _, line in store.log.page("j-nodir", limit=1000)] == [f"line {n}" for n in range(TAIL_LINES + 5)]
    store.close()
