"""The host installer cfn-init runs, run here with a prefix (a scratch root, no systemd, no root).

It builds the venv (fast path: this venv's packages through --extra-site, checked by pip with --no-index), renders
the units, the environment files, the agent config, the CloudWatch agent config; the secret fetcher runs against a
fake ``aws`` CLI; then both services are started exactly as the rendered units say (ExecStart, WorkingDirectory,
EnvironmentFile, StandardOutput) and must answer /health.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.infra.conftest import ROOT
from tests.kiro_double import command as kiro_double_command
from tests.support.servers import die_with_parent, free_port

INSTALL = ROOT / "infra" / "host_install" / "install.sh"
SHARED_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:aipm-shared-AbCdEf"
TOKEN_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:aipm-github-AbCdEf"
ANTHROPIC_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:aipm-anthropic-AbCdEf"
GEMINI_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:aipm-gemini-AbCdEf"
SECRET_VALUES = {SHARED_ARN: "test-shared-secret-0123456789abcdef", TOKEN_ARN: "ghp_" + "x" * 36,
                 ANTHROPIC_ARN: "sk-ant-api03-" + "y" * 40, GEMINI_ARN: "AIzaSy" + "z" * 33}
CALLBACK_ORIGIN = "https://abc123.lambda-url.eu-west-1.on.aws"
QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/AipmKiro-JobQueueJobs-abc.fifo"


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as section → [(key, value)] (keys repeat: EnvironmentFile)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key, value))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit[section] if k == key]


def read_env_file(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile= syntax as the installer writes it: KEY=VALUE, the rest of the line verbatim."""
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    prefix = tmp_path_factory.mktemp("host-root")
    env = {
        **os.environ,
        "AIPM_POOL_SIZE": "2",
        "AIPM_WORKER_POOL_PORT": str(free_port()),
        "AIPM_PR_PROCESSOR_PORT": str(free_port()),
        "AIPM_CALLBACK_ORIGINS": CALLBACK_ORIGIN,
        "AIPM_KIRO_COMMAND": kiro_double_command("--work-seconds", "0"),
        "AIPM_KIRO_DRIVER": "pty",  # the Kiro double speaks the PTY protocol
        "AIPM_SHARED_SECRET_ARN": SHARED_ARN,
        "AIPM_GITHUB_TOKEN_SECRET_ARN": TOKEN_ARN,
        "AIPM_AWS_REGION": "eu-west-1",
        "AIPM_LOG_GROUP_WORKER_POOL": "/aipm/Test/worker-pool",
        "AIPM_LOG_GROUP_PR_PROCESSOR": "/aipm/Test/pr-processor",
        "AIPM_TLS_CERT_PARAMETER": "/aipm/test/cert-sha256",  # 8082 over TLS, as on a host with dispatch=http
    }
    extra_site = sysconfig.get_paths()["purelib"]
    args = ["bash", str(INSTALL), "--prefix", str(prefix), "--source", str(ROOT), "--python", sys.executable,
            "--extra-site", extra_site]
    for _ in range(2):  # cfn-hup runs it again on every code update: a second run must succeed as well
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    return prefix


def unit(root: Path, name: str) -> dict:
    return parse_unit(root / "etc/systemd/system" / f"aipm-{name}.service")


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--source", "/nonexistent"], {}, "/nonexistent"),
    (["--source", str(ROOT)], {"AIPM_POOL_SIZE": "two"}, "AIPM_POOL_SIZE must be a number"),
    (["--source", str(ROOT), "--bogus"], {}, "unknown argument: --bogus"),
    (["--source", str(ROOT)], {"AIPM_DISPATCH": "kafka"}, "AIPM_DISPATCH must be http or sqs, got 'kafka'"),
    (["--source", str(ROOT)], {"AIPM_AGENT": "gpt"}, "AIPM_AGENT must be kiro, claude-code or gemini, got 'gpt'"),
    (["--source", str(ROOT)], {"AIPM_AGENT": "claude-code", "AIPM_KIRO_DRIVER": "pty"},
     "AIPM_AGENT=claude-code speaks ACP only"),
    (["--source", str(ROOT)], {"AIPM_AGENT": "gemini", "AIPM_KIRO_DRIVER": "headless"},
     "AIPM_AGENT=gemini speaks ACP only"),
    (["--source", str(ROOT)], {"AIPM_DISPATCH": "sqs"}, "AIPM_DISPATCH=sqs needs AIPM_JOB_QUEUE_URL"),
    (["--source", str(ROOT)], {"AIPM_DISPATCH": "sqs", "AIPM_JOB_QUEUE_URL": QUEUE_URL, "AIPM_SQS_WAIT_S": "x"},
     "AIPM_SQS_WAIT_S and AIPM_SQS_VISIBILITY_S must be numbers"),
])
def test_install_stops_on_bad_input_and_says_why(tmp_path, args, env, message):
    result = subprocess.run(["bash", str(INSTALL), "--prefix", str(tmp_path), *args],
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "etc/systemd/system/aipm-worker-pool.service").exists(), "nothing half-installed"


def test_units_restart_always_and_start_the_pool_before_the_processor(root):
    pool, processor = unit(root, "worker-pool"), unit(root, "pr-processor")
    for u, module in ((pool, "ec2_services.worker_pool"), (processor, "ec2_services.pr_processor")):
        assert values(u, "Service", "Restart") == ["always"]
        assert values(u, "Service", "User") == ["aipm"]
        assert values(u, "Service", "ExecStart") == [f"{root}/opt/aipm/venv/bin/python -m {module}"]
        assert values(u, "Install", "WantedBy") == ["multi-user.target"]
        assert "aipm-secrets.service" in " ".join(values(u, "Unit", "Requires"))
    assert "aipm-pr-processor.service" in values(pool, "Unit", "Before")[0]
    assert "aipm-worker-pool.service" in values(processor, "Unit", "After")[0]
    assert "aipm-worker-pool.service" in " ".join(values(processor, "Unit", "Wants"))
    assert "aipm-imds-block.service" in values(pool, "Unit", "Requires")[0]


def test_environment_files_carry_the_deployment_values(root):
    etc = root / "etc/aipm"
    common = read_env_file(etc / "common.env")
    pool = read_env_file(etc / "worker-pool.env")
    processor = read_env_file(etc / "pr-processor.env")
    assert common["AIPM_STATE_DIR"] == f"{root}/var/lib/aipm"
    assert common["KIRO_WORKSPACE_ROOT"] == f"{root}/var/lib/aipm/workspaces"
    assert (pool["WORKER_POOL_HOST"], pool["KIRO_POOL_SIZE"]) == ("127.0.0.1", "2")
    assert processor["PR_PROCESSOR_HOST"] == "0.0.0.0"
    assert processor["WORKER_POOL_URL"] == f"http://127.0.0.1:{pool['WORKER_POOL_PORT']}"
    assert processor["AIPM_CALLBACK_ORIGINS"] == CALLBACK_ORIGIN
    for env in (common, pool, processor):
        assert not {"AIPM_SHARED_SECRET", "GITHUB_TOKEN"} & set(env), "no secret in the world-readable files"


def _install(prefix: Path, **env: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIPM_")}
    result = subprocess.run(
        ["bash", str(INSTALL), "--prefix", str(prefix), "--python", sys.executable,
         "--extra-site", sysconfig.get_paths()["purelib"]],
        env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_the_processor_serves_tls_with_a_certificate_made_once(tmp_path):
    """8082 over TLS: a key and self-signed certificate made at the first install, kept by the second (the pin stays)."""
    import hashlib
    import ssl

    _install(tmp_path, AIPM_TLS_CERT_PARAMETER="/aipm/test/cert-sha256")
    processor = read_env_file(tmp_path / "etc/aipm/pr-processor.env")
    cert, key = Path(processor["PR_PROCESSOR_TLS_CERT"]), Path(processor["PR_PROCESSOR_TLS_KEY"])
    assert cert.parent == key.parent == tmp_path / "var/lib/aipm/tls", "with the state, on the data volume"
    assert key.stat().st_mode & 0o077 == 0, "the key is its owner's only"
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    assert (cert.parent / "cert.sha256").read_text().strip() == hashlib.sha256(der).hexdigest()
    mtime = cert.stat().st_mtime_ns
    _install(tmp_path, AIPM_TLS_CERT_PARAMETER="/aipm/test/cert-sha256")
    assert cert.stat().st_mtime_ns == mtime, "a re-run keeps the certificate the Lambda pinned"


def test_without_a_certificate_parameter_the_processor_serves_plain_http(tmp_path):
    _install(tmp_path)
    assert "PR_PROCESSOR_TLS_CERT" not in read_env_file(tmp_path / "etc/aipm/pr-processor.env")


def test_http_dispatch_leaves_the_queue_out_of_the_processor_environment(root):
    processor = read_env_file(root / "etc/aipm/pr-processor.env")
    assert not {k for k in processor if "SQS" in k or k in ("AIPM_DISPATCH", "AIPM_JOB_QUEUE_URL", "AWS_REGION", "AWS_DEFAULT_REGION",
                                                            "AIPM_ASG_NAME")}


def test_sqs_dispatch_points_the_pr_processor_at_the_queue(tmp_path):
    """dispatch=sqs: host.py passes the queue through cfn-init; the processor's environment file carries it."""
    _install(tmp_path, AIPM_DISPATCH="sqs", AIPM_JOB_QUEUE_URL=QUEUE_URL, AIPM_SQS_WAIT_S="20",
             AIPM_SQS_VISIBILITY_S="300", AIPM_AWS_REGION="eu-west-1", AIPM_PR_PROCESSOR_HOST="127.0.0.1",
             AIPM_ASG_NAME="AipmKiro-hosts")
    processor = read_env_file(tmp_path / "etc/aipm/pr-processor.env")
    assert processor["AIPM_DISPATCH"] == "sqs"
    assert processor["AIPM_ASG_NAME"] == "AipmKiro-hosts", "the group it protects itself from scale-in in"
    assert processor["AIPM_JOB_QUEUE_URL"] == QUEUE_URL
    assert (processor["PR_SQS_WAIT_S"], processor["PR_SQS_VISIBILITY_S"]) == ("20", "300")
    assert processor["AWS_REGION"] == "eu-west-1"
    assert processor["AWS_DEFAULT_REGION"] == "eu-west-1", "botocore takes its region from this one"
    assert processor["PR_PROCESSOR_HOST"] == "127.0.0.1", "nothing calls it from outside"
    assert "AIPM_DISPATCH" not in read_env_file(tmp_path / "etc/aipm/worker-pool.env"), "the pool is the same"


def test_default_agent_command_drops_to_the_kiro_user_without_privileges(tmp_path):
    """Without an override the pool starts `kiro-cli chat --legacy-ui --agent aipm` as user kiro through setpriv."""
    _install(tmp_path)
    pool_env = read_env_file(tmp_path / "etc/aipm/worker-pool.env")
    argv = shlex.split(pool_env["KIRO_COMMAND"])
    assert argv[0] == "setpriv" and "--reuid=kiro" in argv and "--nnp" in argv and "--inh-caps=-all" in argv
    assert argv[argv.index("/usr/bin/env") + 1] == "HOME=/home/kiro"
    assert argv[-4:] == ["chat", "--legacy-ui", "--agent", "aipm"] and argv[-5] == "/usr/local/bin/kiro-cli"
    # The repository's tests (POST /run) run behind the same prefix: as kiro, without privileges.
    assert shlex.split(pool_env["KIRO_RUN_AS"]) == argv[:-5]
    pool = parse_unit(tmp_path / "etc/systemd/system/aipm-worker-pool.service")
    assert values(pool, "Service", "AmbientCapabilities") == ["CAP_SETUID CAP_SETGID CAP_KILL"]
    assert values(pool, "Service", "NoNewPrivileges") == ["yes"]
    processor = parse_unit(tmp_path / "etc/systemd/system/aipm-pr-processor.service")
    assert values(processor, "Service", "CapabilityBoundingSet") == [""]


def test_agent_config_aipm_is_valid_kiro_json(root):
    config = json.loads((root / "home/kiro/.kiro/agents/aipm.json").read_text())
    assert config["name"] == "aipm"
    assert {"read", "write", "shell", "grep", "glob"} <= set(config["tools"])
    assert config["allowedTools"] == [], "approval stays with the worker pool (KIRO_DENY_TOOLS)"
    assert config["mcpServers"] == {}
    assert "TASK.md" in config["prompt"]


def test_denied_tools_are_left_out_of_the_agent_config_too(tmp_path):
    """A denied tool is refused twice over: the pool refuses it (KIRO_DENY_TOOLS) and Kiro never offers it."""
    _install(tmp_path, AIPM_KIRO_DENY_TOOLS="use_aws,aws, shell")
    config = json.loads((tmp_path / "home/kiro/.kiro/agents/aipm.json").read_text())
    assert not {"use_aws", "aws", "shell"} & set(config["tools"] + config["allowedTools"])
    assert {"read", "write", "web_fetch"} <= set(config["tools"])
    assert read_env_file(tmp_path / "etc/aipm/worker-pool.env")["KIRO_DENY_TOOLS"] == "use_aws,aws, shell"


def test_the_default_driver_is_acp_as_the_kiro_user(tmp_path):
    _install(tmp_path)
    pool_env = read_env_file(tmp_path / "etc/aipm/worker-pool.env")
    assert pool_env["KIRO_DRIVER"] == "acp"
    for key, tail in (("KIRO_ACP_COMMAND", ["acp", "--agent-engine", "v2", "--agent", "aipm"]),
                      ("KIRO_HEADLESS_COMMAND", ["chat", "--agent", "aipm"])):
        argv = shlex.split(pool_env[key])
        assert argv[0] == "setpriv" and "--reuid=kiro" in argv, key
        assert argv[-len(tail):] == tail and argv[-len(tail) - 1] == "/usr/local/bin/kiro-cli", key


def test_the_driver_comes_from_the_deployment(tmp_path):
    _install(tmp_path, AIPM_KIRO_DRIVER="headless")
    assert read_env_file(tmp_path / "etc/aipm/worker-pool.env")["KIRO_DRIVER"] == "headless"


def test_an_unknown_driver_stops_the_install(tmp_path):
    result = subprocess.run(["bash", str(INSTALL), "--prefix", str(tmp_path), "--source", str(ROOT)],
                            env={**os.environ, "AIPM_KIRO_DRIVER": "tmux"}, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "AIPM_KIRO_DRIVER must be acp, headless or pty, got 'tmux'" in result.stderr


INSTALL_KIRO = ROOT / "infra" / "host_install" / "install-kiro-cli"
# What Kiro's installer does, faked: a kiro-cli in ~/.local/bin that reports the version it was installed as (or
# $FAKE_KIRO_REPORTS) and records every call, e.g. the settings command.
FAKE_KIRO = """#!/bin/sh
echo "$*" >> "$HOME/calls"
[ "$1" = --version ] && echo "kiro-cli @VERSION@"
exit 0
"""


def _install_kiro(home: Path, version: str, **env: str) -> subprocess.CompletedProcess:
    fake = home / "fake-kiro-cli"
    fake.write_text(FAKE_KIRO)
    download = (f'mkdir -p "$HOME/.local/bin" && echo "install $KIRO_VERSION" >> "$HOME/calls" && '
                f'sed "s/@VERSION@/${{FAKE_KIRO_REPORTS:-$KIRO_VERSION}}/" {fake} > "$HOME/.local/bin/kiro-cli" && '
                'chmod +x "$HOME/.local/bin/kiro-cli"')
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIPM_", "KIRO_"))}
    return subprocess.run(["bash", str(INSTALL_KIRO)], capture_output=True, text=True, timeout=60,
                          env={**clean, "HOME": str(home), "KIRO_VERSION": version,
                               "KIRO_INSTALL_COMMAND": download, **env})


def test_kiro_cli_is_installed_at_the_pinned_version_with_auto_update_off(tmp_path):
    result = _install_kiro(tmp_path, "2.19.1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{tmp_path}/.local/bin/kiro-cli"
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "install 2.19.1", "the install command was given the pinned version"
    assert calls[-1] == "settings app.disableAutoupdates true"
    # cfn-hup runs the install again: the pinned version already there is kept, auto-update is set again.
    again = _install_kiro(tmp_path, "2.19.1")
    assert again.returncode == 0, again.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c for c in calls if c.startswith("install")] == ["install 2.19.1"]
    assert calls[-1] == "settings app.disableAutoupdates true"
    # A new pin replaces it.
    assert _install_kiro(tmp_path, "2.20.0").returncode == 0
    assert "install 2.20.0" in (tmp_path / "calls").read_text().splitlines()


def test_a_kiro_cli_of_another_version_than_the_pin_fails_the_install(tmp_path):
    result = _install_kiro(tmp_path, "2.19.1", FAKE_KIRO_REPORTS="3.0.2")
    assert result.returncode != 0
    assert "kiro-cli 3.0.2 was installed, but kiroVersion pins 2.19.1" in result.stderr


def test_agent_user_is_blocked_from_instance_metadata(root):
    script = (root / "opt/aipm/bin/aipm-imds-block").read_text()
    assert "iptables -I OUTPUT 1 -m owner --uid-owner kiro -d 169.254.169.254/32 -j DROP" in script
    assert "fd00:ec2::254" in script
    assert values(unit(root, "imds-block"), "Service", "ExecStart") == [f"{root}/opt/aipm/bin/aipm-imds-block"]


def test_cloudwatch_agent_ships_each_service_log_to_its_group(root):
    config = json.loads((root / "opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.json").read_text())
    shipped = {c["file_path"]: c["log_group_name"] for c in config["logs"]["logs_collected"]["files"]["collect_list"]}
    for name in ("worker-pool", "pr-processor"):
        log_file = values(unit(root, name), "Service", "StandardOutput")[0].removeprefix("append:")
        assert shipped[log_file] == f"/aipm/Test/{name}"


def _fake_aws(tmp_path: Path, fail: bool = False) -> Path:
    script = tmp_path / "aws"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"values = {json.dumps(SECRET_VALUES)}\n"
        "args = sys.argv[1:]\n"
        "assert args[:2] == ['secretsmanager', 'get-secret-value'], args\n"
        "arn = args[args.index('--secret-id') + 1]\n"
        + ("sys.exit('AccessDeniedException: not authorized')\n" if fail else "print(values[arn])\n")
    )
    script.chmod(0o755)
    return script


def _fetch_secrets(root: Path, aws: Path) -> subprocess.CompletedProcess:
    conf = read_env_file(root / "etc/aipm/secrets.conf")
    command = shlex.split(values(unit(root, "secrets"), "Service", "ExecStart")[0])
    return subprocess.run(command, env={"PATH": os.environ["PATH"], **conf, "AIPM_AWS_CLI": str(aws)},
                          capture_output=True, text=True, timeout=60)


def test_secret_fetcher_writes_root_only_environment_files(root, tmp_path):
    result = _fetch_secrets(root, _fake_aws(tmp_path))
    assert result.returncode == 0, result.stderr
    secrets = root / "run/aipm/secrets"
    pool, processor = read_env_file(secrets / "worker-pool.env"), read_env_file(secrets / "pr-processor.env")
    assert pool == {"AIPM_SHARED_SECRET": SECRET_VALUES[SHARED_ARN]}
    assert processor == {"AIPM_SHARED_SECRET": SECRET_VALUES[SHARED_ARN], "GITHUB_TOKEN": SECRET_VALUES[TOKEN_ARN]}
    assert (secrets / "pr-processor.env").stat().st_mode & 0o777 == 0o600
    assert SECRET_VALUES[TOKEN_ARN] not in result.stderr + result.stdout


@pytest.mark.parametrize(("agent", "arn", "variable", "argv_tail"), [
    ("claude-code", ANTHROPIC_ARN, "ANTHROPIC_API_KEY", ["{agents}/node_modules/.bin/claude-code-acp"]),
    ("gemini", GEMINI_ARN, "GEMINI_API_KEY",
     ["GEMINI_CLI_SYSTEM_SETTINGS_PATH={agents}/gemini-settings.json", "{agents}/node_modules/.bin/gemini", "--acp"]),
])
def test_open_source_agent_is_installed_from_the_lock_file_and_run_over_acp(tmp_path, agent, arn, variable, argv_tail):
    """agent=claude-code / gemini: the pinned npm package instead of kiro-cli, ACP as the kiro user, its model key
    from its secret under the variable that agent reads, in the pool's secrets only."""
    _install(tmp_path, AIPM_AGENT=agent, AIPM_SHARED_SECRET_ARN=SHARED_ARN,
             AIPM_GITHUB_TOKEN_SECRET_ARN=TOKEN_ARN, AIPM_AGENT_KEY_SECRET_ARN=arn)
    pool_env = read_env_file(tmp_path / "etc/aipm/worker-pool.env")
    assert (pool_env["AIPM_AGENT"], pool_env["KIRO_DRIVER"]) == (agent, "acp")
    argv = shlex.split(pool_env["KIRO_ACP_COMMAND"])
    assert argv[0] == "setpriv" and "--reuid=kiro" in argv
    agents = tmp_path / "opt/aipm/agents"
    assert argv[-len(argv_tail):] == [part.format(agents=agents) for part in argv_tail]
    assert (agents / "package-lock.json").read_text() == \
        (ROOT / "agents/package-lock.json").read_text(), "npm ci installs exactly the tested versions"
    assert (agents / "gemini-settings.json").read_text() == (ROOT / "agents/gemini-settings.json").read_text()
    result = _fetch_secrets(tmp_path, _fake_aws(tmp_path))
    assert result.returncode == 0, result.stderr
    secrets = tmp_path / "run/aipm/secrets"
    pool_secrets = read_env_file(secrets / "worker-pool.env")
    assert pool_secrets[variable] == SECRET_VALUES[arn]
    assert not {"ANTHROPIC_API_KEY", "GEMINI_API_KEY"} - {variable} & set(pool_secrets), "only this agent's key"
    assert variable not in read_env_file(secrets / "pr-processor.env"), "the agent's key, not the processor's"
    assert SECRET_VALUES[arn] not in result.stdout + result.stderr, "never logged"
    for env_file in (tmp_path / "etc/aipm").iterdir():
        assert SECRET_VALUES[arn] not in env_file.read_text()


def test_secret_fetcher_fails_naming_the_secret_it_could_not_read(root, tmp_path):
    result = _fetch_secrets(root, _fake_aws(tmp_path, fail=True))
    assert result.returncode == 1
    assert "AIPM_SHARED_SECRET: could not read" in result.stderr and "AccessDenied" in result.stderr


@contextlib.contextmanager
def run_unit(root: Path, name: str):
    """Start a service the way systemd would from its rendered unit (as this user, no sandboxing)."""
    u = unit(root, name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIPM_", "KIRO_", "WORKER_POOL_", "PR_PROCESSOR_"))}
    for path in values(u, "Service", "EnvironmentFile"):
        env.update(read_env_file(Path(path.removeprefix("-"))))
    log_path = Path(values(u, "Service", "StandardOutput")[0].removeprefix("append:"))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(shlex.split(values(u, "Service", "ExecStart")[0]), env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=values(u, "Service", "WorkingDirectory")[0],
                                start_new_session=True, preexec_fn=die_with_parent)
    try:
        yield proc, env, log_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def wait_health(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: the service exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(url, timeout=2, verify=False)  # the host's own self-signed certificate
            if response.status_code == 200:
                return response.json()
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer 200 in {timeout} s:\n{log.read_text()[-3000:]}")


def test_both_services_start_from_the_rendered_units_and_answer_health(root, tmp_path):
    if not (ROOT / "ec2_services/worker_pool/__main__.py").exists() or \
            not (ROOT / "ec2_services/pr_processor/__main__.py").exists():
        pytest.skip("the services' entry points are not in the tree yet")
    assert _fetch_secrets(root, _fake_aws(tmp_path)).returncode == 0
    with run_unit(root, "worker-pool") as (pool, pool_env, pool_log):
        pool_health = wait_health(f"http://127.0.0.1:{pool_env['WORKER_POOL_PORT']}/health", pool, pool_log)
        with run_unit(root, "pr-processor") as (processor, env, processor_log):
            health = wait_health(f"https://127.0.0.1:{env['PR_PROCESSOR_PORT']}/health", processor, processor_log)
            assert health["status"] == "ok"
            assert health["worker_pool"] == "ok", "the processor reaches the pool at the rendered WORKER_POOL_URL"
    assert pool_health["pool_size"] == 2
    # What the CloudWatch agent ships: the services' JSON lines, in the files the units append to.
    for log in (pool_log, processor_log):
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        assert lines, f"{log} has no JSON log lines"
        assert SECRET_VALUES[SHARED_ARN] not in log.read_text()
    assert (root / "var/lib/aipm/jobs.sqlite").exists(), "the processor keeps its jobs under /var/lib/aipm"


POOL_UID = 65533  # stands in for the `aipm` service user: any uid that is neither root nor the agent's
AGENT_USER = "nobody"  # stands in for `kiro`: a real user name, as --init-groups needs


def _agent_processes(marker: str) -> list[dict[str, str]]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            cmdline = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker in cmdline:
                found.append(dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line))
    return found


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="switching users needs root (as the host's systemd has) and util-linux setpriv")
def test_the_pool_runs_the_agent_as_its_own_user_without_capabilities_or_secrets(tmp_path):
    """The rendered units' privilege split, for real: the pool as a non-root user with its unit's ambient
    capabilities, the agent dropped by the rendered KIRO_COMMAND to another user with none, and cancelled/killed
    by the pool when it stops (CAP_KILL)."""
    from aipm_common.signing import SigningAuth
    from tests.kiro_double import SCRIPT

    prefix = Path(tempfile.mkdtemp(prefix="aipm-host-", dir="/tmp"))  # pytest's tmp is root-only (0700)
    try:
        os.chmod(prefix, 0o755)
        port = free_port()
        # The double is stdlib-only: run it with the system interpreter, which every user can execute.
        agent_python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
        _install(prefix, AIPM_AGENT_USER=AGENT_USER, AIPM_POOL_SIZE="1", AIPM_KIRO_DRIVER="pty", AIPM_WORKER_POOL_PORT=str(port),
                 AIPM_KIRO_BIN=shlex.join([agent_python, str(SCRIPT)]), AIPM_SHARED_SECRET_ARN=SHARED_ARN,
                 AIPM_GITHUB_TOKEN_SECRET_ARN=TOKEN_ARN)
        assert _fetch_secrets(prefix, _fake_aws(tmp_path)).returncode == 0
        # What the host's install does with chown: the pool owns the state, the agent's user the workspaces.
        for path in (prefix / "var/lib/aipm", prefix / "var/log/aipm/worker-pool.log"):
            os.chown(path, POOL_UID, POOL_UID)
        os.chown(prefix / "var/lib/aipm/workspaces", 65534, 65534)

        pool = unit(prefix, "worker-pool")
        caps = values(pool, "Service", "AmbientCapabilities")[0].lower().replace("cap_", "+").replace(" ", ",")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIPM_", "KIRO_", "WORKER_POOL_"))}
        for path in values(pool, "Service", "EnvironmentFile"):
            env.update(read_env_file(Path(path)))
        env["KIRO_API_KEY"] = "ksk_test_key_for_the_agent"
        as_service_user = ["setpriv", f"--reuid={POOL_UID}", f"--regid={POOL_UID}", "--clear-groups",
                           f"--inh-caps={caps}", f"--ambient-caps={caps}", "--nnp", "--"]
        log_path = prefix / "var/log/aipm/worker-pool.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(as_service_user + shlex.split(values(pool, "Service", "ExecStart")[0]),
                                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=values(pool, "Service", "WorkingDirectory")[0])
        try:
            health = wait_health(f"http://127.0.0.1:{port}/health", proc, log_path)
            deadline = time.monotonic() + 20
            while health["workers"][0]["state"] != "idle" and time.monotonic() < deadline:
                time.sleep(0.2)
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
            assert health["workers"][0]["state"] == "idle", (health, log_path.read_text()[-2000:])
            response = httpx.post(
                f"http://127.0.0.1:{port}/execute",
                json={"task_id": "privileges-1", "prompt": "[[cat /proc/self/status]] [[env AIPM_SHARED_SECRET]] "
                      "[[env GITHUB_TOKEN]] [[env KIRO_API_KEY]] [[pwd]]"},
                auth=SigningAuth(SECRET_VALUES[SHARED_ARN], "worker-pool"), timeout=60,
            )
            assert response.status_code == 200, response.text
            output = response.json()["output"]
            assert re.search(r"Uid:\s+65534\s", output), output
            assert re.search(r"CapEff:\s+0+\s", output) and re.search(r"CapAmb:\s+0+\s", output)
            assert re.search(r"NoNewPrivs:\s+1", output)
            assert "AIPM_SHARED_SECRET is not set" in output and "GITHUB_TOKEN is not set" in output
            assert "KIRO_API_KEY is set" in output, "the Kiro API key reaches the agent"
            assert f"pwd: {prefix}/var/lib/aipm/workspaces" in output
            assert _agent_processes(str(SCRIPT)), "the agent runs while the pool does"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # as systemd stops the unit: the pool must take its agents along
            proc.wait(timeout=20)
        deadline = time.monotonic() + 10
        while _agent_processes(str(SCRIPT)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _agent_processes(str(SCRIPT)), "the pool (CAP_KILL) stopped its agent running as another user"
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def _can_overlay() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c",
                            "d=$(mktemp -d) && mkdir $d/u $d/w && "
                            "mount -t overlay overlay -o lowerdir=/opt,upperdir=$d/u,workdir=$d/w /opt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$AIPM_STUB_LOG"
case "$(basename "$0") $1" in "iptables -C"|"ip6tables -C") exit 1 ;; esac
exit 0
"""
FAKE_KIRO_INSTALL = ('mkdir -p "$HOME/.local/bin" && printf "#!/bin/sh\\necho kiro-cli $KIRO_VERSION\\n" '
                     '> "$HOME/.local/bin/kiro-cli" && chmod +x "$HOME/.local/bin/kiro-cli" && id -un > "$HOME/installed-by"')


@pytest.mark.skipif(not _can_overlay(), reason="needs root and overlay mounts in a private mount namespace")
def test_host_path_as_cfn_init_runs_it_in_an_overlaid_root(tmp_path):
    """The steps a prefix skips, run for real against copy-on-write overlays of /etc, /opt, /var, /home, /usr/local
    and /run in a private mount namespace (nothing reaches this machine's own files): users, ownership, the kiro-cli
    install as user kiro, the agent config, units enabled and started in order, the IMDS rule, the CloudWatch agent.
    Only the package manager, systemctl, iptables, curl and the CloudWatch agent's control script are stubs that
    record their arguments."""
    layers = tmp_path / "layers"
    stub_log = tmp_path / "calls.log"
    stub_log.touch()
    mounts = []
    for target in ("/etc", "/opt", "/var", "/home", "/usr/local", "/run"):
        name = target.strip("/").replace("/", "-")
        (layers / name / "upper").mkdir(parents=True)
        (layers / name / "work").mkdir()
        mounts.append(f"mount -t overlay overlay -o lowerdir={target},upperdir={layers / name / 'upper'},"
                      f"workdir={layers / name / 'work'} {target}")
    stubs = ["mkdir -p /usr/local/sbin /opt/aws/amazon-cloudwatch-agent/bin"]
    for tool in ("dnf", "systemctl", "iptables", "ip6tables", "curl"):
        stubs.append(f"cat > /usr/local/sbin/{tool} <<'STUB'\n{STUB}STUB\nchmod +x /usr/local/sbin/{tool}")
    stubs.append("cp /usr/local/sbin/dnf /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl")
    script = "\n".join([
        "set -e", *mounts, *stubs,
        f"bash {INSTALL} --source {ROOT} --python {sys.executable} --extra-site {sysconfig.get_paths()['purelib']}",
        # Evidence from inside the namespace, where the overlaid names resolve.
        f"getent passwd aipm kiro > {tmp_path}/passwd",
        f"id -Gn kiro > {tmp_path}/kiro-groups",
        f"stat -c '%U:%G %a' /var/lib/aipm /var/lib/aipm/workspaces /home/kiro/.kiro/agents/aipm.json > {tmp_path}/owners",
        # What the agent's user may write, as the pool starts it (its own uid and groups, aipm among them).
        "as_kiro() { setpriv --reuid=kiro --regid=kiro --init-groups -- \"$@\"; }",
        f"as_kiro touch /var/lib/aipm/workspaces/by-agent && echo workspaces:yes >> {tmp_path}/agent-writes"
        f" || echo workspaces:no >> {tmp_path}/agent-writes",
        f"as_kiro touch /var/lib/aipm/by-agent 2>/dev/null && echo state:yes >> {tmp_path}/agent-writes"
        f" || echo state:no >> {tmp_path}/agent-writes",
        f"readlink /usr/local/bin/kiro-cli > {tmp_path}/kiro-link",
        f"cat /home/kiro/installed-by > {tmp_path}/installed-by",
        f"cp /etc/aipm/worker-pool.env {tmp_path}/worker-pool.env",
        f"ls /etc/systemd/system > {tmp_path}/units",
    ])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AIPM_")},
           "AIPM_STUB_LOG": str(stub_log), "AIPM_KIRO_INSTALL_COMMAND": FAKE_KIRO_INSTALL,
           "AIPM_SHARED_SECRET_ARN": SHARED_ARN, "AIPM_GITHUB_TOKEN_SECRET_ARN": TOKEN_ARN}
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "bash", "-c", script],
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]

    calls = stub_log.read_text().splitlines()
    assert calls[0].startswith("dnf install -y -q git python3.12 python3.12-pip util-linux iptables-nft")
    assert "iptables -I OUTPUT 1 -m owner --uid-owner kiro -d 169.254.169.254/32 -j DROP" in calls
    assert "systemctl enable aipm-secrets.service aipm-imds-block.service aipm-worker-pool.service " \
           "aipm-pr-processor.service" in calls
    restarts = [c for c in calls if c.startswith("systemctl restart")]
    assert restarts == ["systemctl restart aipm-secrets.service", "systemctl restart aipm-worker-pool.service",
                        "systemctl restart aipm-pr-processor.service"]
    assert any(c.startswith("amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c file:/opt/aws/") for c in calls)
    assert [c for c in calls if c.startswith("curl")] == [
        "curl -kfsS -o /dev/null http://127.0.0.1:8081/health", "curl -kfsS -o /dev/null http://127.0.0.1:8082/health"]

    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "passwd").read_text().splitlines()}
    assert passwd["aipm"][6] == "/sbin/nologin" and passwd["kiro"][5:7] == ["/home/kiro", "/bin/bash"]
    assert "aipm" in (tmp_path / "kiro-groups").read_text().split()
    assert (tmp_path / "owners").read_text().splitlines() == ["aipm:aipm 755", "kiro:aipm 2775", "kiro:kiro 644"]
    # The agent writes in the workspaces only: the state directory (job database, askpass script) is not its.
    assert (tmp_path / "agent-writes").read_text().split() == ["workspaces:yes", "state:no"]
    assert (tmp_path / "kiro-link").read_text().strip() == "/home/kiro/.local/bin/kiro-cli"
    assert (tmp_path / "installed-by").read_text().strip() == "kiro", "kiro-cli is installed by its own user"
    assert "--reuid=kiro --regid=kiro --init-groups" in read_env_file(tmp_path / "worker-pool.env")["KIRO_COMMAND"]
    assert {"aipm-worker-pool.service", "aipm-pr-processor.service", "aipm-secrets.service",
            "aipm-imds-block.service"} <= set((tmp_path / "units").read_text().split())
    assert not Path("/etc/aipm").exists() and not Path("/opt/aipm").exists(), "nothing leaked out of the overlays"
