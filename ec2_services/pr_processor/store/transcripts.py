"""A job's whole transcript, one file per job: ``<dir>/<job id>.jsonl.gz``, a gzip file of ``[id, ts, line]`` JSON lines.

Each append is one gzip member written at the end of the file in one ``write`` (``zcat`` reads the members as one
stream), so the file only grows by whole members; a member cut short by a crash can only be the last one, and
``repair`` cuts it off before the first append of the process that comes next. The database keeps each job's last
lines (``job_log``); this file keeps them all, until the retention deletes the job and its file.

Owns the directory, the file names (a job id is checked against the contract's pattern before it becomes one, so no
job's file is ever another's, nor outside the directory) and the format. It knows no database.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from aipm_common.contracts import JOB_ID_PATTERN

log = logging.getLogger(__name__)

SUFFIX = ".jsonl.gz"
_JOB_ID = re.compile(JOB_ID_PATTERN)
_FIRST_CHUNK = 1024
_MAX_CHUNK = 1 << 20

Row = tuple[int, float, str]  # (line id, time, text)


def _members(raw: bytes) -> Iterator[tuple[int, bytes]]:
    """Each whole gzip member of ``raw``, in order: (the offset just past it, what it holds). Stops at one cut short
    or damaged (only ever the last, see ``repair``). Fed in growing chunks, so what is left over after a member (the
    decompressor's copy) stays about the member's size, whatever the file's."""
    view = memoryview(raw)
    start = 0
    while start < len(raw):
        inflate = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer
        parts: list[bytes] = []
        end, chunk = start, _FIRST_CHUNK
        try:
            while not inflate.eof and end < len(raw):
                piece = view[end:end + chunk]
                parts.append(inflate.decompress(piece))
                end += len(piece)
                chunk = min(chunk * 2, _MAX_CHUNK)
        except zlib.error:
            return
        if not inflate.eof:
            return
        end -= len(inflate.unused_data)
        yield end, b"".join(parts)
        start = end


def _rows(data: bytes) -> Iterator[Row]:
    for text in data.split(b"\n"):
        if text:
            line_id, ts, line = json.loads(text)
            yield int(line_id), float(ts), line


class Transcripts:
    def __init__(self, root: Path):
        self.root = root
        try:
            self._make_root()
        except OSError as exc:  # a read-only state directory: the lines stay in the database (``JobLog``)
            log.warning("transcript directory %s cannot be made (%s); tried again at the next append", root, exc)

    def _make_root(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.root.stat().st_mode & 0o077:  # the service's alone, as the database (the agent's user is in its group)
            self.root.chmod(0o700)

    def path(self, job_id: str) -> Path:
        """The job's file. ValueError for an id outside the contract's pattern (``/``, ``..``, a newline…)."""
        if not _JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / f"{job_id}{SUFFIX}"

    def append(self, job_id: str, rows: Iterable[Row]) -> None:
        """Add the rows at the end of the job's file, as one gzip member in one write (OSError: not written)."""
        data = "".join(json.dumps([line_id, round(ts, 3), line], ensure_ascii=False, separators=(",", ":")) + "\n"
                       for line_id, ts, line in rows).encode()
        if not data:
            return
        member = gzip.compress(data, compresslevel=6, mtime=0)
        if not self.root.is_dir():
            self._make_root()
        fd = os.open(self.path(job_id), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(member)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def repair(self, job_id: str) -> int:
        """Cut off a member left unfinished by a crash (so what is appended next can be read); returns the id of the
        last line the file holds (0: none, or no file)."""
        path = self.path(job_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return 0
        good, last = 0, 0
        for end, data in _members(raw):
            good = end
            for line_id, _, _ in _rows(data):
                last = line_id
        if good < len(raw):
            log.warning("transcript %s: %d bytes after the last whole entry (an append cut short) removed",
                        path, len(raw) - good)
            os.truncate(path, good)
        return last

    def read(self, job_id: str, *, after_id: int = 0, limit: int | None = None) -> list[Row]:
        """The file's lines after ``after_id``, oldest first, at most ``limit``; [] when the job has no file."""
        try:
            raw = self.path(job_id).read_bytes()
        except FileNotFoundError:
            return []
        out: list[Row] = []
        for _, data in _members(raw):
            out.extend(row for row in _rows(data) if row[0] > after_id)
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def delete(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            with contextlib.suppress(FileNotFoundError):
                self.path(job_id).unlink()

    def job_ids(self) -> list[str]:
        """The jobs that have a file."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [name[:-len(SUFFIX)] for name in names if name.endswith(SUFFIX) and _JOB_ID.fullmatch(name[:-len(SUFFIX)])]
