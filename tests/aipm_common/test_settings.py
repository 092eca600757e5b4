"""Settings: docs/contracts.md's defaults, and bad values failing at start with the variable's name."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from aipm_common.envnames import ALL
from aipm_common.settings import SettingsError, load_settings, require_secret
from ec2_services.pr_processor.settings import PrProcessorSettings
from ec2_services.worker_pool.settings import WorkerPoolSettings
from lambda_fn.settings import LambdaSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ALL:
        monkeypatch.delenv(name, raising=False)


def test_worker_pool_defaults_match_spec():
    s = load_settings(WorkerPoolSettings)
    assert (s.worker_pool_host, s.worker_pool_port) == ("127.0.0.1", 8081)
    assert s.kiro_pool_size == 2
    assert s.kiro_driver == "pty"
    assert s.kiro_task_timeout == 1800
    assert s.kiro_queue_limit == 64
    assert s.kiro_stall_timeout == 600
    assert s.kiro_trouble_retries == 3
    assert s.deny_tools == []
    assert s.aipm_state_dir == Path("~/.local/state/aipm").expanduser()
    assert s.kiro_workspace_root == s.aipm_state_dir / "workspaces"


def test_pr_processor_defaults_match_spec():
    s = load_settings(PrProcessorSettings)
    assert (s.pr_processor_host, s.pr_processor_port) == ("127.0.0.1", 8082)
    assert s.worker_pool_url == "http://127.0.0.1:8081"
    assert s.pr_processor_db == s.aipm_state_dir / "jobs.sqlite"
    assert s.kiro_workspace_root == s.aipm_state_dir / "workspaces"
    assert s.pr_max_attempts == 3
    assert s.git_base_url == "https://github.com"
    assert s.callback_origins == []
    assert (s.git_author_name, s.git_author_email) == ("AIPM Kiro Bot", "aipm-bot@users.noreply.github.com")


def test_lambda_defaults_match_spec():
    s = load_settings(LambdaSettings)
    assert s.github_api_url == "https://api.github.com"
    assert s.aipm_auth is None
    assert s.aipm_forge == "github"
    assert s.aipm_local_forge_dir == s.aipm_state_dir / "forge"
    assert s.aipm_api_port == 8000


def test_state_dir_moves_every_derived_path(monkeypatch, tmp_path):
    monkeypatch.setenv("AIPM_STATE_DIR", str(tmp_path))
    assert load_settings(PrProcessorSettings).pr_processor_db == tmp_path / "jobs.sqlite"
    assert load_settings(WorkerPoolSettings).kiro_workspace_root == tmp_path / "workspaces"
    assert load_settings(LambdaSettings).aipm_local_forge_dir == tmp_path / "forge"


@pytest.mark.parametrize("value", ["0", "33", "two", "-1"])
def test_bad_pool_size_fails_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("KIRO_POOL_SIZE", value)
    with pytest.raises(SettingsError) as err:
        load_settings(WorkerPoolSettings)
    assert "KIRO_POOL_SIZE" in err.value.message


def test_bad_regex_fails_naming_the_variable(monkeypatch):
    monkeypatch.setenv("KIRO_PROMPT_PATTERN", "([unclosed")
    with pytest.raises(SettingsError) as err:
        load_settings(WorkerPoolSettings)
    assert "KIRO_PROMPT_PATTERN" in err.value.message


def test_secret_value_never_shown_in_errors(monkeypatch):
    monkeypatch.setenv("AIPM_SHARED_SECRET", "topsecretvalue")
    monkeypatch.setenv("WORKER_POOL_PORT", "99999")
    with pytest.raises(SettingsError) as err:
        load_settings(WorkerPoolSettings)
    assert "WORKER_POOL_PORT" in err.value.message
    assert "topsecretvalue" not in err.value.message


def test_lists_are_split_on_commas(monkeypatch):
    monkeypatch.setenv("KIRO_DENY_TOOLS", "use_aws, execute_bash,")
    monkeypatch.setenv("AIPM_ALLOWED_REPOS", "Acme/Web, acme/*")
    assert load_settings(WorkerPoolSettings).deny_tools == ["use_aws", "execute_bash"]
    assert load_settings(LambdaSettings).allowed_repo_list == ["acme/web", "acme/*"]


def test_missing_secret_refuses_to_start():
    s = load_settings(WorkerPoolSettings)
    with pytest.raises(SettingsError) as err:
        require_secret(s, "worker-pool", logging.getLogger("t"))
    assert "AIPM_SHARED_SECRET" in err.value.message


def test_insecure_dev_starts_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("AIPM_INSECURE_DEV", "1")
    s = load_settings(WorkerPoolSettings)
    with caplog.at_level(logging.WARNING):
        assert require_secret(s, "worker-pool", logging.getLogger("t")) is None
    assert "AIPM_INSECURE_DEV" in caplog.text


def test_variables_are_read_in_any_case_empty_ones_unset_and_arguments_win(monkeypatch):
    monkeypatch.setenv("aipm_log_level", "debug")
    monkeypatch.setenv("AIPM_INSECURE_DEV", "yes")
    monkeypatch.setenv("GITHUB_API_URL", "")  # empty = unset: the default stands
    monkeypatch.setenv("AIPM_API_PORT", "9001")
    monkeypatch.setenv("NOT_A_SETTING", "ignored")
    s = load_settings(LambdaSettings, aipm_api_port=9002)
    assert s.aipm_log_level == "DEBUG" and s.aipm_insecure_dev is True
    assert s.github_api_url == "https://api.github.com" and s.aipm_api_port == 9002
    assert not hasattr(s, "not_a_setting")


def test_a_field_with_a_validation_alias_is_read_from_that_variable(monkeypatch):
    from pydantic import AliasChoices, Field

    from aipm_common.settings import EnvSettings

    class Aliased(EnvSettings):
        port: int = Field(1, validation_alias=AliasChoices("NEW_PORT", "OLD_PORT"))

    monkeypatch.setenv("old_port", "7")
    assert load_settings(Aliased).port == 7
    monkeypatch.setenv("NEW_PORT", "8")
    assert load_settings(Aliased).port == 8
    assert load_settings(Aliased, port=9).port == 9
    monkeypatch.setenv("NEW_PORT", "x")
    with pytest.raises(SettingsError, match="NEW_PORT"):
        load_settings(Aliased)


def test_settings_do_not_import_pydantic_settings():
    import subprocess
    import sys

    code = "import sys, lambda_fn.settings; print('pydantic_settings' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
