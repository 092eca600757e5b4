"""Agent CLI profiles: the documented defaults, the Q CLI profile, and the KIRO_* variables overriding any field."""

from __future__ import annotations

import re

import pytest

from ec2_services.worker_pool.app import create_app
from ec2_services.worker_pool.profiles import DEFAULT_PROMPT_PATTERN, resolve_profile, unescape_reply
from ec2_services.worker_pool.settings import WorkerPoolSettings


def settings(**values) -> WorkerPoolSettings:
    return WorkerPoolSettings(aipm_shared_secret="s" * 16, **values)


def test_kiro_profile_has_the_spec_defaults():
    profile = resolve_profile(settings())
    assert profile.argv == ["kiro-cli", "chat", "--legacy-ui", "--agent", "aipm"]
    assert profile.prompt_pattern == DEFAULT_PROMPT_PATTERN
    assert profile.approval_reply == "t\r"
    assert re.search(profile.approval_pattern, "Allow this action? Use 't' to trust (always allow) this tool for the session. [y/n/t]:")
    assert re.search(profile.approval_pattern, "Allow this action? [y/n/t]:")
    assert profile.deny_tools == ()


def test_q_profile_runs_the_amazon_q_cli_with_the_same_protocol():
    profile = resolve_profile(settings(kiro_profile="q"))
    assert profile.argv[:2] == ["q", "chat"]
    assert re.search(profile.prompt_pattern, "[developer]> ")


def test_variables_override_any_field_of_the_profile():
    profile = resolve_profile(
        settings(
            kiro_profile="q",
            kiro_command="my-agent --flag 'two words'",
            kiro_prompt_pattern=r"\$ $",
            kiro_approval_pattern=r"Proceed\? \[y/n\]",
            kiro_approval_reply="y\\r",
            kiro_deny_tools="use_aws, shell",
        )
    )
    assert profile.argv == ["my-agent", "--flag", "two words"]
    assert profile.prompt_pattern == r"\$ $"
    assert profile.approval_pattern == r"Proceed\? \[y/n\]"
    assert profile.approval_hint == ""  # an overridden question has no known literal: always run its regex
    assert profile.approval_reply == "y\r"
    assert profile.deny_tools == ("use_aws", "shell")


def test_reply_escapes_are_understood():
    assert unescape_reply(r"t\r") == "t\r"
    assert unescape_reply(r"yes\nplease\t\\") == "yes\nplease\t\\"


def test_kiro_driver_picks_the_driver_and_acp_gets_the_acp_command_and_deny_list():
    from ec2_services.worker_pool.drivers import make_driver
    from ec2_services.worker_pool.drivers.acp import AcpDriver
    from ec2_services.worker_pool.drivers.pty.session import PtySession

    acp = settings(kiro_driver="acp", kiro_acp_command="kiro-cli acp --agent 'my agent'", kiro_deny_tools="use_aws")
    driver = make_driver(acp, resolve_profile(acp))(3)
    assert isinstance(driver, AcpDriver) and driver.honours_cwd
    assert (driver.worker_id, driver.argv, driver.deny_tools) == (3, ["kiro-cli", "acp", "--agent", "my agent"], ("use_aws",))
    pty = make_driver(settings(), resolve_profile(settings()))(1)
    assert isinstance(pty, PtySession) and not pty.honours_cwd
    create_app(acp, secret=None)  # accepted at start


def test_an_unknown_driver_is_refused():
    with pytest.raises(ValueError):
        settings(kiro_driver="grpc")


def test_aipm_agent_claude_code_runs_its_acp_server_with_its_own_key_and_no_other_agents():
    from ec2_services.worker_pool.drivers import make_driver
    from ec2_services.worker_pool.drivers.acp import AcpDriver

    claude = settings(aipm_agent="Claude-Code")
    assert (claude.aipm_agent, claude.kiro_driver) == ("claude-code", "acp")  # ACP only: the driver follows
    env = {"ANTHROPIC_API_KEY": "sk-ant-x", "OPENAI_API_KEY": "sk-o", "KIRO_API_KEY": "k", "IS_SANDBOX": "yes",
           "GITHUB_TOKEN": "ghp_x", "PATH": "/usr/bin"}
    driver = make_driver(claude, resolve_profile(claude), env=env)(1)
    assert isinstance(driver, AcpDriver) and driver.argv == ["claude-code-acp"]
    assert driver._env["ANTHROPIC_API_KEY"] == "sk-ant-x" and driver._env["PATH"] == "/usr/bin"
    assert driver._env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert not {"OPENAI_API_KEY", "KIRO_API_KEY", "IS_SANDBOX", "GITHUB_TOKEN"} & set(driver._env)
    kiro = make_driver(settings(kiro_driver="acp"), resolve_profile(settings()), env=env)(1)
    assert kiro.argv[:2] == ["kiro-cli", "acp"] and "ANTHROPIC_API_KEY" not in kiro._env and kiro._env["KIRO_API_KEY"] == "k"
    with pytest.raises(ValueError, match="ACP only"):
        settings(aipm_agent="claude-code", kiro_driver="pty")


def test_aipm_agent_gemini_runs_gemini_acp_with_its_own_key_and_reads_tool_names_from_the_call_id():
    from ec2_services.worker_pool.drivers import make_driver
    from ec2_services.worker_pool.drivers.acp import AcpDriver

    gemini = settings(aipm_agent="gemini")
    assert (gemini.aipm_agent, gemini.kiro_driver) == ("gemini", "acp")
    env = {"GEMINI_API_KEY": "AIza-x", "ANTHROPIC_API_KEY": "sk-ant-x", "GOOGLE_GENAI_USE_VERTEXAI": "true",
           "GITHUB_TOKEN": "ghp_x", "PATH": "/usr/bin"}
    driver = make_driver(gemini, resolve_profile(gemini), env=env)(1)
    assert isinstance(driver, AcpDriver) and driver.argv == ["gemini", "--acp"]
    assert driver._env["GEMINI_API_KEY"] == "AIza-x" and driver._env["GEMINI_CLI_NO_RELAUNCH"] == "true"
    assert not {"ANTHROPIC_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GITHUB_TOKEN"} & set(driver._env)
    # Gemini CLI's core names each call `<tool>__<id>`: the name the deny-list matches.
    assert driver._named_in_id("run_shell_command__run_shell_command_1765_0") == "run_shell_command"
    assert driver._named_in_id("write_file__abc") == "write_file" and driver._named_in_id("toolu_01abc") is None
    claude = make_driver(settings(aipm_agent="claude-code"), resolve_profile(gemini), env=env)(1)
    assert claude._named_in_id("write_file__abc") is None  # only an agent whose profile says so
