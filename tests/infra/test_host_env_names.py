"""The host's shell scripts spell variable names themselves: each one must be declared in aipm_common.envnames.

install.sh reads its parameters (``$AIPM_…``) and writes the services' environment files (heredocs into
``/etc/aipm/*.env`` and ``*.conf``); aipm-data-volume and install-kiro-cli read theirs. A typo in any of those names,
or an environment file carrying a name its reader does not read, fails here. (aipm-fetch-secrets is Python and
takes its names from the module: tests/aipm_common/test_envnames.py checks it.)
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aipm_common import envnames
from aipm_common.envnames import ALL, HostInstall, HostTools, Platform, names
from ec2_services.pr_processor.settings import PrProcessorSettings
from ec2_services.worker_pool.settings import WorkerPoolSettings

HOST_INSTALL = Path(__file__).resolve().parents[2] / "infra" / "host_install"
SCRIPTS = ("install.sh", "aipm-data-volume", "install-kiro-cli")
# The shell's and the login's own variables, which the scripts set or read for the programs they start.
SHELL = {"HOME", "USER", "LOGNAME", "PATH", "BASH_SOURCE"}
_HEREDOC = re.compile(r"""(?:cat\s+>>?\s*"([^"]+)"\s+)?<<(-?)(['"]?)(\w+)\3""")
_ASSIGN = re.compile(r"(?:^|(?<=\s))([A-Z][A-Z0-9_]*)=")
_READ = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")
_LOCAL = re.compile(r"^\s*([A-Z][A-Z0-9_]*)=")  # at the start of a line that does not continue the one before


@dataclass
class Script:
    """The variable names a shell script uses: its own locals, the names it reads or passes on, and the keys of
    each file it writes by a heredoc."""

    locals: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)
    files: dict[str, set[str]] = field(default_factory=dict)

    @property
    def environment(self) -> set[str]:
        """The names that are the environment's, not the script's own variables."""
        return (self.used - self.locals - SHELL) | {key for keys in self.files.values() for key in keys}


def parse(text: str) -> Script:
    script = Script()
    heredoc: tuple[str | None, str, bool] | None = None  # (target file, terminator, expands $)
    continued = False
    for line in text.splitlines():
        follows, continued = continued, line.rstrip().endswith("\\")
        if heredoc:
            target, end, expands = heredoc
            if line.strip() == end:
                heredoc = None
                continue
            if target and target.endswith((".env", ".conf")) and (key := re.match(r"([A-Z][A-Z0-9_]*)=", line)):
                script.files.setdefault(Path(target).name, set()).add(key.group(1))
            if expands and not line.lstrip().startswith("#"):
                script.used |= set(_READ.findall(line))
            continue
        if line.lstrip().startswith("#"):
            continue
        if not follows and (local := _LOCAL.match(line)):
            script.locals.add(local.group(1))
        script.used |= set(_READ.findall(line)) | set(_ASSIGN.findall(line))
        if found := _HEREDOC.search(line):
            heredoc = (found.group(1), found.group(4), not found.group(3))
    return script


@pytest.fixture(scope="module")
def scripts() -> dict[str, Script]:
    return {name: parse((HOST_INSTALL / name).read_text()) for name in SCRIPTS}


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_name_a_host_script_uses_is_declared(scripts, name):
    undeclared = scripts[name].environment - ALL
    assert not undeclared, f"{name} uses {sorted(undeclared)}: declare them in aipm_common/envnames.py"


def test_install_sh_reads_every_install_parameter(scripts):
    """infra/host.py sets only HostInstall names: each one must be one install.sh reads (a typo there is caught)."""
    unread = set(names(HostInstall)) - scripts["install.sh"].used
    assert not unread, f"install.sh never reads {sorted(unread)}"


def _settings_names(settings) -> set[str]:
    return {f.validation_alias for f in settings.model_fields.values()}


def _fetcher_names() -> set[str]:
    """The names aipm-fetch-secrets takes from the module (``Group.NAME`` attributes)."""
    tree = ast.parse((HOST_INSTALL / "aipm-fetch-secrets").read_text())
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and hasattr(envnames, node.value.id) and node.attr in ALL}


def test_each_environment_file_carries_only_what_its_reader_reads(scripts):
    pool, processor = _settings_names(WorkerPoolSettings), _settings_names(PrProcessorSettings)
    readers = {
        "common.env": (pool & processor) | set(names(Platform)),
        "worker-pool.env": pool,
        "pr-processor.env": processor | set(names(Platform)),
        "secrets.conf": _fetcher_names(),
        "data-volume.conf": scripts["aipm-data-volume"].environment,
    }
    files = scripts["install.sh"].files
    assert set(files) == set(readers), "the environment files install.sh writes"
    for name, keys in files.items():
        assert keys <= readers[name], f"{name} sets {sorted(keys - readers[name])}, which its reader never reads"


def test_the_fetcher_and_the_data_volume_take_their_parameters_from_the_module(scripts):
    assert {HostTools.AIPM_SECRETS_DIR, HostTools.AIPM_AWS_CLI, HostInstall.AIPM_SHARED_SECRET_ARN} <= _fetcher_names()
    assert {HostInstall.AIPM_DATA_VOLUME_ID, HostTools.AIPM_DATA_DEVICE} <= scripts["aipm-data-volume"].environment


def test_the_parser_sees_a_misspelt_name():
    """The checks above can fail: a misspelt key in an environment file and a misspelt parameter are both seen."""
    script = parse('ETC=/etc/aipm\nPOOL="${AIPM_POOL_SIZ:-2}"\ncat > "$ETC/worker-pool.env" <<EOF\nKIRO_POOL_SIZ=$POOL\nEOF\n')
    assert script.environment - ALL == {"AIPM_POOL_SIZ", "KIRO_POOL_SIZ"}
    assert script.files == {"worker-pool.env": {"KIRO_POOL_SIZ"}}
