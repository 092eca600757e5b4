"""P6: agent output processed per second through the worker pool vs `cat` of the same bytes through a PTY (goal ≥ 0.5×
on realistic output), and the service's memory with 8 idle workers (agents not counted).

Two streams of about 20 MB each:

- *flood*: coloured build-log lines (an SGR code every few words) and nothing else.
- *realistic*: built from the real Kiro / Q CLI captures in ``bench/corpus/`` (see its README): spinner frames on
  ``\\r`` cleared with ``ESC[2K``, the coloured answer marker, markdown and code, tool lines, answered approval
  questions, `` - Completed in``, a progress line redrawn with a cursor move, a status line under save/restore cursor (``ESC 7`` / ``ESC 8``), the Credits line.

Baseline: `cat` of the file in a 200×50 PTY, read to its end as fast as Python can. Service: a task whose agent (the
Kiro double) copies the same file to its terminal; the figure is bytes / time from sending ``/execute`` to its answer,
so it includes everything the pool does per byte (decoding, stripping, classifying, the answer, the condensed log)
and the turn around it. Each pair runs `cat` and the pool back to back (which goes first alternates pair by pair), and
the ratio is taken within the pair; the table gives min / median / max over the pairs and the load average.
On a shared machine wall time mostly measures the scheduler, so each side's CPU time is given too: the reading
process's for `cat` (what the cheapest reader spends per byte) and the pool process's for the task (everything the
service does per byte, the HTTP request included); their ratio (bytes per CPU second, pool / `cat`) holds under load.
A third table times the line path alone, in this process (CPU time, so it holds under load): the steps the session
takes per read (decode, ``RecentScreen.feed``, ``LineAssembler.feed``, the service log, the transcript, the prompt
check) and the answer at the end, on each stream cut in 4 KB reads (what a PTY read gives) and in 64 KB ones.
Run: ``python -m bench p6_output_flood`` (``P6_PAIRS``, ``P6_MB`` change the pairs and the size).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from ptyprocess import PtyProcess

from tests.kiro_double.harness import running_pool

SIZE_MB = int(os.environ.get("P6_MB", "20"))
PAIRS = int(os.environ.get("P6_PAIRS", "5"))
GOALS = {"flood": 0.5, "realistic": 0.5}
CORPUS = Path(__file__).resolve().parent / "corpus"

ESC = "\x1b"
GREY, RESET = f"{ESC}[38;5;8m", f"{ESC}[0m"
ANSWER_MARK = f"{ESC}[38;5;10m> {ESC}[39m"
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def make_flood(path: Path, size_mb: int = SIZE_MB) -> int:
    lines = []
    for i in range(2000):
        lines.append(
            f"\x1b[38;5;{i % 256}m{i:05d}\x1b[0m compiling \x1b[1mmodule_{i % 97}\x1b[22m ... "
            f"\x1b[32mok\x1b[39m \x1b[2m({i % 13}.{i % 7}s)\x1b[22m \x1b[33mwarning:\x1b[39m unused `x`\n"
        )
    return _write_repeated(path, "".join(lines).encode(), size_mb)


def _write_repeated(path: Path, block: bytes, size_mb: int) -> int:
    with path.open("wb") as out:
        written = 0
        while written < size_mb * 1_000_000:
            out.write(block)
            written += len(block)
    return written


def _capture(name: str) -> list[str]:
    return (CORPUS / name).read_text(encoding="utf-8").split("\n")


def realistic_unit(n: int) -> str:
    """One turn's worth of what the real CLI prints, from the captures (numbered so no two units are alike)."""
    answer = _capture("kiro_cli_complex_response.txt")[1:]  # without the `$ q chat` line
    answer = "\n".join(line for line in answer if "[developer]" not in line).strip("\n")  # nor the idle prompt
    stale = _capture("kiro_cli_permission_stale_answered.txt")
    question = next(line for line in stale if line.startswith("Allow this action?"))
    tool_line = next(line for line in stale if "(using tool:" in line)
    updating = next(line for line in stale if line.startswith("Updating:"))
    done = next(line for line in stale if "Completed in" in line)
    follow = next(line for line in stale if line.startswith("> Now"))[2:]
    credits = next(line for line in _capture("kiro_cli_tui_complex_response.txt") if "Credits:" in line)
    spin = "".join(f"\r{GREY}{SPINNER[k % len(SPINNER)]} Thinking...{RESET}" for k in range(12)) + f"\r{ESC}[2K"
    build = "".join(
        f"   {ESC}[32mCompiling{ESC}[0m crate_{n}_{k} v0.{k}.0 ({ESC}[2m/src/crate_{k}{ESC}[22m)\n" for k in range(12)
    )
    progress = "".join(f"{ESC}[1A{ESC}[2K  Downloading deps [{'#' * k}{'.' * (10 - k)}] {k * 10}%\n" for k in range(1, 11))
    return (
        f"{spin}{ANSWER_MARK}{answer}\n\n"
        f"{tool_line.replace('.tsx', f'_{n}.tsx')}\n\n{question}\n\n"
        f"{updating}\n{done}\n\n"
        f"{spin}{ANSWER_MARK}{follow} (step {n})\n"
        f"Running `cargo build` (using tool: shell)\n\n{question}\n\n"
        f"  Downloading deps [..........] 0%\n{progress}{build}"
        f"{ESC}7{ESC}[1;1H{ESC}[2K{GREY}building {n}{RESET}{ESC}8"
        f"    {ESC}[32;1mFinished{ESC}[0m dev [unoptimized + debuginfo] target(s) in 4.{n % 10}s\n"
        f"{done}\n\n{ANSWER_MARK}The build passes.\n\n{GREY}{credits}{RESET}\n\n"
    )


def make_realistic(path: Path, size_mb: int = SIZE_MB) -> int:
    return _write_repeated(path, "".join(realistic_unit(n) for n in range(200)).encode(), size_mb)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cat_rate(path: Path) -> tuple[float, float]:
    """(bytes per wall second, bytes per CPU second of this reading process)."""
    proc = PtyProcess.spawn(["cat", str(path)], dimensions=(50, 200))
    received = 0
    cpu = time.process_time()
    started = time.perf_counter()
    while True:
        try:
            data = os.read(proc.fd, 65536)
        except OSError:
            break
        if not data:
            break
        received += len(data)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    proc.close()
    return received / elapsed, received / max(cpu, 1e-6)


def pool_rate(client, pid: int, path: Path, size: int, task_id: str) -> tuple[float, float, str]:
    """(bytes per wall second, bytes per CPU second of the pool process, the answer)."""
    cpu = _cpu_seconds(pid)
    started = time.perf_counter()
    r = client.post("/execute", json={"prompt": f"Flood [[cat {path}]]", "task_id": task_id})
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(pid) - cpu
    if r.status_code != 200:
        raise RuntimeError(f"flood task: {r.status_code} {r.text[:300]}")
    return size / elapsed, size / max(cpu, 1e-6), r.json()["output"]


def paired(client, pid: int, path: Path, size: int, pairs: int, label: str) -> dict:
    """``pairs`` pairs of (`cat`, pool) runs; which side runs first alternates. Ratios are pool / cat per pair."""
    cats, pools, ratios, cpu_ratios, output = [], [], [], [], ""
    for k in range(pairs):
        if k % 2 == 0:
            cat, cat_cpu = cat_rate(path)
            pool, pool_cpu, output = pool_rate(client, pid, path, size, f"p6-{label}-{k}")
        else:
            pool, pool_cpu, output = pool_rate(client, pid, path, size, f"p6-{label}-{k}")
            cat, cat_cpu = cat_rate(path)
        cats.append(cat)
        pools.append(pool)
        ratios.append(pool / cat)
        cpu_ratios.append(pool_cpu / cat_cpu)
    return {"cat": cats, "pool": pools, "ratio": ratios, "cpu_ratio": cpu_ratios, "output_chars": len(output),
            "size": size}


def line_path_rate(path: Path, chunk: int) -> float:
    """Bytes per CPU second of the session's per-read steps and the answer, in this process (no PTY, no HTTP)."""
    import codecs  # noqa: PLC0415 - this table only

    from ec2_services.worker_pool.drivers.agent_log import AgentOutputLog  # noqa: PLC0415
    from ec2_services.worker_pool.drivers.pty.screen import (  # noqa: PLC0415
        LineAssembler,
        Patterns,
        RecentScreen,
        classify_screen,
        last_nonblank_line,
    )
    from ec2_services.worker_pool.drivers.pty.transcript import Transcript  # noqa: PLC0415
    from ec2_services.worker_pool.profiles import PROFILES  # noqa: PLC0415

    data = path.read_bytes().replace(b"\n", b"\r\n")  # as the terminal's ONLCR delivers it
    profile = PROFILES["kiro"]
    patterns = Patterns(profile)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    lines, screen = LineAssembler(profile), RecentScreen()
    turn, agent_log = Transcript(patterns), AgentOutputLog(0)
    turn.begin("Flood [[cat x]]")
    last = ""
    started = time.process_time()
    for at in range(0, len(data), chunk):
        text = decoder.decode(data[at : at + chunk])
        screen.feed(text)
        block = lines.feed(text)
        if block.count:
            last = last_nonblank_line(block) or last
            agent_log.block(block)
            turn.add(block)
        plain = lines.partial_plain()
        if (patterns.prompt_at_end(plain) and not lines.partial_is_answer_start()) if plain.strip() \
                else patterns.prompt_at_end(last):
            classify_screen(screen.bottom_lines(), patterns)
    turn.output()
    return len(data) / (time.process_time() - started)


def idle_rss_kib(workers: int = 8) -> int:
    with running_pool(workers) as pool:
        time.sleep(1.0)
        status = Path(f"/proc/{pool.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def run(size_mb: int = SIZE_MB, pairs: int = PAIRS) -> dict[str, dict]:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        streams = {"flood": make_flood, "realistic": make_realistic}
        with running_pool(1, ("--work-seconds", "0")) as pool, pool.client(timeout=600) as client:
            for label, make in streams.items():
                path = Path(tmp) / f"{label}.ansi"
                size = make(path, size_mb)
                load_before = os.getloadavg()[0]
                results[label] = paired(client, pool.process.pid, path, size, pairs, label)
                results[label]["load"] = (load_before, os.getloadavg()[0])
                results[label]["line_path"] = {chunk: line_path_rate(path, chunk) for chunk in (4096, 65536)}
    return results


def main() -> None:
    results = run()
    med = statistics.median
    print("| stream | `cat` through a PTY (median) | worker pool, one task (median) | wall ratio min / median / max | goal "
          "| CPU ratio min / median / max |")
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for label, r in results.items():
        ratios, cpu, goal = r["ratio"], r["cpu_ratio"], GOALS[label]
        verdict = "met" if med(ratios) >= goal else "**NOT met**"
        print(
            f"| {r['size'] / 1e6:.0f} MB {label} | {med(r['cat']) / 1e6:.1f} MB/s | {med(r['pool']) / 1e6:.1f} MB/s | "
            f"{min(ratios):.2f}× / **{med(ratios):.2f}×** / {max(ratios):.2f}× | ≥ {goal}×: {verdict} "
            f"| {min(cpu):.2f}× / {med(cpu):.2f}× / {max(cpu):.2f}× |"
        )
    for label, r in results.items():
        print(f"- {label}: {len(r['ratio'])} pairs, `cat` and pool back to back (first side alternating); "
              f"1-min load average {r['load'][0]:.1f} before, {r['load'][1]:.1f} after on {os.cpu_count()} CPUs; "
              f"the answer kept its last {r['output_chars']:,} characters")
    print()
    print("| line path alone, in-process CPU time | 4 KB reads | 64 KB reads |")
    print("| --- | ---: | ---: |")
    for label, r in results.items():
        rates = r["line_path"]
        print(f"| {r['size'] / 1e6:.0f} MB {label} | {rates[4096] / 1e6:.0f} MB/s | {rates[65536] / 1e6:.0f} MB/s |")
    print()
    rss = idle_rss_kib()
    print("| service RSS, 8 idle workers (agents excluded) |")
    print("| ---: |")
    print(f"| {rss / 1024:.1f} MiB |")


if __name__ == "__main__":
    main()
