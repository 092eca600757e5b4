"""The GitHub token reaches git's askpass for the GIT_BASE_URL origin only, and nothing else ever shows it; git runs
with hooks disabled and never follows a .git file the agent rewrote."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
from pathlib import Path

from ec2_services.pr_processor.git_ops import GitOps
from tests.ec2_services.pr_processor.conftest import BRANCH, REPO, TOKEN
from tests.ec2_services.pr_processor.fake_pool import Plan
from tests.ec2_services.pr_processor.http_forge import serve_http_forge


def test_token_never_in_logs_records_responses_or_the_database(start_processor, forge, fake_pool, shared_secret):
    fake_pool.plan("j-leak", Plan(files={"t.txt": "t\n"}, output=f"I found the token {TOKEN} in the env!"))
    fake_pool.plan("j-fail", Plan(files={"f.txt": "f\n"}, status=504, output=f"Authorization: token {TOKEN}"))
    proc = start_processor(PR_MAX_ATTEMPTS="1")
    assert proc.submit("j-leak").status_code == 202
    assert proc.submit("j-fail", branch="aipm/story-2").status_code == 202
    assert proc.submit("j-bad", branch=f"aipm/{TOKEN}$").status_code == 400
    leak, failed = proc.wait("j-leak"), proc.wait("j-fail")
    assert leak["status"] == "succeeded" and failed["status"] == "failed"
    assert "***" in leak["log_tail"]
    responses = proc.client.get("/api/jobs").text + proc.client.get("/api/jobs/j-leak").text
    with proc.client.stream("GET", "/api/jobs/j-fail/events") as stream:
        responses += stream.read().decode()
    proc.proc.stop()
    stored = b"".join(p.read_bytes() for p in proc.state_dir.glob("jobs.sqlite*"))
    everything = {
        "service log": proc.output(),
        "API responses": responses,
        "job database": stored.decode("latin-1"),
        "job transcripts": "".join(gzip.decompress(p.read_bytes()).decode()
                                   for p in (proc.state_dir / "transcripts").glob("*.jsonl.gz")),
        "commits": "".join(c.subject + c.body for c in forge.log(REPO, BRANCH) + forge.log(REPO, "aipm/story-2")),
        "prompts": repr(fake_pool.executes),
        "mirror config": "".join(p.read_text() for p in (proc.state_dir / "mirrors").rglob("config")),
    }
    assert proc.output().count("\n") > 10  # the log was really captured
    assert "***" in everything["job transcripts"]  # the transcripts were really read, and hold the redacted line
    for where, text in everything.items():
        assert TOKEN not in text, f"token found in {where}"
        assert "T0kenThatMustNeverLeak" not in text, f"token fragment found in {where}"


def _askpass(gitops_state: Path, prompt: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(gitops_state / "git-askpass.sh"), prompt], env=env_extra, capture_output=True, text=True)


def test_askpass_answers_only_for_the_git_base_url_origin(tmp_path):
    ops = GitOps(base_url="https://ghe.example.com", token=TOKEN, state_dir=tmp_path, workspace_root=tmp_path / "w",
                 author_name="a", author_email="a@example.com")
    env = {**ops._askpass_env, "AIPM_ASKPASS_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    assert ops._askpass_env["GIT_ASKPASS"] == str(tmp_path / "git-askpass.sh")
    assert TOKEN not in (tmp_path / "git-askpass.sh").read_text()
    user = _askpass(tmp_path, "Username for 'https://ghe.example.com': ", env)
    password = _askpass(tmp_path, "Password for 'https://x-access-token@ghe.example.com': ", env)
    assert user.stdout.strip() == "x-access-token" and password.stdout.strip() == TOKEN
    for other in ("Password for 'https://x-access-token@evil.example.com': ",
                  "Password for 'https://x-access-token@ghe.example.com.evil.io': ",
                  "Password for 'http://x-access-token@ghe.example.com': ",
                  "Username for 'https://evil.example.com': "):
        answer = _askpass(tmp_path, other, env)
        assert answer.returncode != 0 and TOKEN not in answer.stdout


def test_token_is_given_only_to_network_git_commands_and_never_on_the_command_line(tmp_path, monkeypatch):
    ops = GitOps(base_url="https://ghe.example.com", token=TOKEN, state_dir=tmp_path, workspace_root=tmp_path / "w",
                 author_name="a", author_email="a@example.com")
    seen: list[tuple[list[str], dict[str, str]]] = []
    real = asyncio.create_subprocess_exec

    async def spy(*argv, env=None, **kwargs):
        seen.append((list(argv), dict(env or {})))
        return await real(*argv, env=env, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)

    async def scenario():
        await ops._run("--version")
        await ops._run("ls-remote", "https://127.0.0.1:9/x/y.git", network=True, check=False)

    asyncio.run(scenario())
    (local_argv, local_env), (net_argv, net_env) = seen
    assert "AIPM_ASKPASS_TOKEN" not in local_env and "GIT_ASKPASS" not in local_env
    assert net_env["AIPM_ASKPASS_TOKEN"] == TOKEN and net_env["GIT_ASKPASS"].endswith("git-askpass.sh")
    for argv, env in seen:
        assert not any(TOKEN in arg for arg in argv)
        assert "core.hooksPath=/dev/null" in argv and "credential.helper=" in argv
        assert env["GIT_CONFIG_GLOBAL"] == "/dev/null" and "AIPM_SHARED_SECRET" not in env and "GITHUB_TOKEN" not in env


def test_hooks_do_not_run_and_a_rewritten_git_file_is_not_followed(start_processor, forge, fake_pool, tmp_path):
    marker = tmp_path / "hook-ran"
    decoy = tmp_path / "decoy"
    subprocess.run(["git", "init", "-q", str(decoy)], check=True)

    def plant(cwd: Path) -> None:
        mirror_hooks = Path(cwd).parents[1] / "mirrors" / "acme" / "app.git" / "hooks"
        for name in ("pre-commit", "commit-msg", "post-commit", "pre-push", "reference-transaction", "post-checkout"):
            hook = mirror_hooks / name
            hook.write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
            hook.chmod(0o755)
        (Path(cwd) / ".git").write_text(f"gitdir: {decoy}/.git\n")

    fake_pool.plan("j-hooks", Plan(files={"h.txt": "h\n"}, action=plant))
    previous = os.umask(0o002)  # the host's services run with UMask=0002 (group-writable workspaces)
    try:
        proc = start_processor()
    finally:
        os.umask(previous)
    assert proc.submit("j-hooks").status_code == 202
    job = proc.wait("j-hooks")
    assert job["status"] == "succeeded", job
    assert not marker.exists(), marker.read_text()
    assert forge.show(REPO, BRANCH, "h.txt") == "h\n" and forge.tip(REPO, BRANCH) == job["commit"]
    assert ".git" not in forge.show(REPO, BRANCH, "")
    assert subprocess.run(["git", "-C", str(decoy), "rev-parse", "HEAD"], capture_output=True).returncode != 0
    mirrors = proc.state_dir / "mirrors"
    for path in [mirrors, mirrors / "acme", *(mirrors / "acme").rglob("*")]:
        assert path.stat().st_mode & 0o022 == 0, f"{path} is writable by group or others"


def test_token_reaches_the_git_host_through_askpass_only(start_processor, forge, fake_pool):
    fake_pool.plan("j-https", Plan(files={"auth.txt": "pushed over http\n"}))
    with serve_http_forge(forge.root, TOKEN) as (url, server):
        proc = start_processor(GIT_BASE_URL=url)
        assert proc.submit("j-https").status_code == 202
        job = proc.wait("j-https")
    assert job["status"] == "succeeded", job
    assert forge.tip(REPO, BRANCH) == job["commit"]
    authorized = [r for r in server.requests if r[2] == server.expected]
    assert any("git-upload-pack" in target for _, target, _ in authorized)  # fetch
    assert any("git-receive-pack" in target for _, target, _ in authorized)  # push
    assert all(target.startswith(f"/{REPO}.git/") for _, target, _ in server.requests)
    assert not any(TOKEN in target for _, target, _ in server.requests)
    proc.proc.stop()
    stored = b"".join(p.read_bytes() for p in proc.state_dir.glob("jobs.sqlite*")).decode("latin-1")
    mirror_config = "".join(p.read_text() for p in (proc.state_dir / "mirrors").rglob("config"))
    for text in (proc.output(), stored, mirror_config, job["log_tail"]):
        assert TOKEN not in text
    assert url not in mirror_config  # no remote configured: every fetch and push names the URL it built


def test_without_a_token_the_http_forge_refuses_and_the_job_fails_clearly(start_processor, forge, fake_pool):
    with serve_http_forge(forge.root, TOKEN) as (url, server):
        proc = start_processor(GIT_BASE_URL=url, GITHUB_TOKEN="", PR_MAX_ATTEMPTS="1")
        assert proc.submit("j-notoken").status_code == 202
        job = proc.wait("j-notoken")
    assert job["status"] == "failed" and "fetch failed" in job["error"]
    assert server.requests and all(auth != server.expected for _, _, auth in server.requests)
    assert fake_pool.executes == []
