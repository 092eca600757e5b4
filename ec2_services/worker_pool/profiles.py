"""Agent profiles, as data: what a chat CLI prints and expects (docs/contracts.md, "Kiro facts"), and which coding agent
the workers run (``AIPM_AGENT``).

Owns the defaults for each supported CLI ("kiro" = ``kiro-cli chat``, "q" = the Amazon Q CLI's ``q chat``, which
shares the protocol) and how the ``KIRO_*`` variables override any field; and, per agent (``kiro``, ``claude-code``
= the unmodified open-source ``@zed-industries/claude-code-acp``, ``gemini`` = Google's ``@google/gemini-cli``
run as ``gemini --acp``), its ACP command, the one secret it may receive
(its own API key variable, never the services' nor another agent's), the variables it needs set, and where its wire
names a tool. It compiles patterns once; it must not touch a terminal or a process.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from aipm_common.envnames import Agent, WorkerPool
from ec2_services.worker_pool.settings import WorkerPoolSettings

# The idle prompt, searched on the last non-blank line of the ANSI-free screen: `[aipm] 20% λ > `, `[dev]> `, `> `.
DEFAULT_PROMPT_PATTERN = r"(?:\[[\w.-]+\]\s*)?(?:\d+%\s*)?(?:λ\s*)?!?>\s*$"
# Every wording seen across versions: `Allow this action? [y/n/t]:`, `… to trust (always allow) this tool for the
# session. [y/n/t]:`, `… the 'NAME' tool …`.
DEFAULT_APPROVAL_PATTERN = r"Allow this action\?.*\[y/n/t\]:"
# A spinner frame: a braille dot character first on its line.
DEFAULT_SPINNER_PATTERN = r"^\s*[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]\s"


@dataclass(frozen=True)
class AgentProfile:
    """One chat CLI's terminal protocol. Regexes apply to ANSI-free text unless their name says ``raw``."""

    name: str
    command: str
    prompt_pattern: str = DEFAULT_PROMPT_PATTERN
    approval_pattern: str = DEFAULT_APPROVAL_PATTERN
    approval_reply: str = "t\r"
    deny_reply: str = "n\r"
    # `/clear` asks `Are you sure? … [y/n]:`, a blank line, then reads the answer at its own yellow `> ` input prompt
    # (the Q/Kiro CLI's `clear.rs`: `read_user_input("> ".yellow())`, crossterm's yellow is `ESC[38;5;11m`);
    # this confirms it. ``confirm_prompt_raw`` tells that `> ` from the answer's coloured marker.
    clear_command: str = "/clear"
    clear_confirm_pattern: str = r"\[y/n\]:\s*$"
    clear_reply: str = "y\r"
    confirm_prompt_raw: str = r"(?:\x1b\[[0-9;?]*[A-Za-z])*\x1b\[(?:33|93|38;5;(?:3|11))m> "
    # The answer's own leading `> ` is coloured (green: `ESC[38;5;10m> ESC[39m` in the captures); a literal `> ` in
    # the text is not (raw pattern, at a line start). The prompt's own `> ` is magenta, space included (the CLI's
    # `StyledText::prompt("> ")`): a `> ` whose last colour is magenta (35) is the bare prompt, not the answer.
    answer_marker_raw: str = r"(?:\x1b\[[0-9;]*m)*\x1b\[(?![0-9;]*(?<![0-9])35m)[0-9;]*m> (?:\x1b\[[0-9;]*m)*"
    tool_pattern: str = r"\(using tool: ([\w.@:/-]+)\)|Using tool: ([\w.@:/-]+)|the '([\w.@:/-]+)' tool"
    credits_pattern: str = r"▸ Credits: ([0-9]+(?:\.[0-9]+)?)\s*•\s*Time: "
    # Literal text every match of approval/tool/credits pattern contains: output without it skips those regexes.
    # ("" = no hint: always run the regex; an overridden KIRO_APPROVAL_PATTERN has none.)
    approval_hint: str = "Allow this action"
    tool_hint: str = "tool"
    credits_hint: str = "Credits"
    # Kiro's own error form: a line that starts with its header (the error's details, e.g. `ThrottlingException`,
    # follow it). Throttling words in the agent's prose are the answer, never a reason to send the task again.
    trouble_pattern: str = r"^\s*(?:Kiro|Amazon Q) is having trouble responding right now"
    spinner_pattern: str = DEFAULT_SPINNER_PATTERN
    # A bare `> ` prompt cannot be told from the answer's first `> ` at once: it must stay quiet this long.
    bare_prompt_quiet_s: float = 0.3
    # Kiro prints `▸ Credits: N • Time: Ns` after every answer, then its prompt: that pair ends a turn at once. A
    # prompt-like line without it (an answer quoting `[aipm] 20% λ > `) ends the turn only if nothing follows it for
    # ``unconfirmed_prompt_quiet_s`` (an answer Kiro ends without credits, e.g. an error, still ends). The Q CLI
    # prints no credits: False there, the prompt alone ends the turn.
    credits_end_turn: bool = True
    unconfirmed_prompt_quiet_s: float = 3.0
    # What a screen the PTY driver cannot read shows (the full-screen TUI of kiro-cli 2.x/3.x): seen before the
    # first prompt, the start is refused with a message naming the fix instead of waiting out the start timeout.
    unreadable_screen_pattern: str = r"Ask a question or describe a task|ctrl\+g: agent monitor"
    deny_tools: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("prompt_pattern", "approval_pattern", "clear_confirm_pattern", "tool_pattern"):
            re.compile(getattr(self, name))

    @property
    def argv(self) -> list[str]:
        """The command split as a shell splits words, to run without a shell."""
        return shlex.split(self.command)


PROFILES: dict[str, AgentProfile] = {
    "kiro": AgentProfile(name="kiro", command="kiro-cli chat --legacy-ui --agent aipm"),
    "q": AgentProfile(name="q", command="q chat --agent aipm", credits_end_turn=False),
}


@dataclass(frozen=True)
class AgentKind:
    """One coding agent the workers can run (``AIPM_AGENT``)."""

    name: str
    # Its ACP server command (``KIRO_ACP_COMMAND`` overrides); None for an agent with no ACP server.
    acp_command: str
    # The only variables naming a model-provider credential it may receive: its own.
    key_vars: tuple[str, ...] = ()
    # Variables it is always started with (the setting wins over the service's environment).
    fixed_env: tuple[tuple[str, str], ...] = ()
    # Variables it must not see at all (not secrets: ones that change how it runs).
    dropped_env: tuple[str, ...] = ()
    # Where its ACP messages name a tool (informative; the driver reads ``_meta.<vendor>.toolName`` generically).
    tool_name_at: str = ""
    # For an agent that names a tool only in its toolCallId: the name is group 1 of this (matched at the start).
    call_id_name: re.Pattern | None = None
    # What it reports of a turn's model usage, if anything (informative).
    usage_at: str = ""
    # The npm package (pinned in agents/package-lock.json) whose bin is the command, for the host installer.
    npm_package: str | None = None
    # Whether the driver may be the PTY one (a chat CLI with a terminal protocol: Kiro only).
    has_pty: bool = False

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` without any other agent's model key, without ``dropped_env``, with ``fixed_env``."""
        foreign = PROVIDER_KEY_VARS - set(self.key_vars)
        env = {k: v for k, v in base.items() if k not in foreign and k not in self.dropped_env}
        env.update(self.fixed_env)
        return env


# Every model-provider credential an agent of ours reads: each reaches its own agent alone.
PROVIDER_KEY_VARS = frozenset({
    WorkerPool.ANTHROPIC_API_KEY, Agent.ANTHROPIC_AUTH_TOKEN, Agent.CLAUDE_CODE_OAUTH_TOKEN,
    Agent.OPENAI_API_KEY, WorkerPool.GEMINI_API_KEY, Agent.GOOGLE_API_KEY, Agent.KIRO_API_KEY,
})

AGENTS: dict[str, AgentKind] = {
    "kiro": AgentKind(
        name="kiro", acp_command=WorkerPoolSettings.model_fields["kiro_acp_command"].default,
        key_vars=(Agent.KIRO_API_KEY,), tool_name_at="_meta.kiro.toolName", has_pty=True,
    ),
    "claude-code": AgentKind(
        name="claude-code",
        acp_command="claude-code-acp",
        key_vars=(WorkerPool.ANTHROPIC_API_KEY,),
        # Its only model call is then the streaming POST /v1/messages: no telemetry, no update checks.
        fixed_env=((Agent.CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC, "1"),),
        # As root, IS_SANDBOX set to anything but "1" makes every session/new fail (it asks for a permission
        # bypass Claude Code then refuses); unset, it never asks for one.
        dropped_env=(Agent.IS_SANDBOX,),
        tool_name_at="_meta.claudeCode.toolName on the tool_call update; kind edit/execute/read/…",
        usage_at="nothing (0.16.2: the prompt response is {stopReason} alone)",
        npm_package="@zed-industries/claude-code-acp",
    ),
    "gemini": AgentKind(
        name="gemini",
        acp_command="gemini --acp",
        key_vars=(WorkerPool.GEMINI_API_KEY,),
        # Without it the CLI re-spawns itself as a second node process sized to half the machine's memory: one
        # process per worker instead, under the pool's own limits.
        fixed_env=((Agent.GEMINI_CLI_NO_RELAUNCH, "true"),),
        # Either would switch it to Vertex AI / Google sign-in instead of GEMINI_API_KEY.
        dropped_env=(Agent.GOOGLE_GENAI_USE_VERTEXAI, Agent.GOOGLE_GENAI_USE_GCA),
        # Its core names every call `<tool>__<id>` (`write_file__write_file_1765…_0`); no _meta, the title is prose.
        tool_name_at="the toolCallId's prefix before '__' (write_file, run_shell_command, …); kind edit/execute/read/…",
        call_id_name=re.compile(r"([A-Za-z][\w.-]*?)__"),
        usage_at="the prompt response's _meta.quota.token_count {input_tokens, output_tokens} (and model_usage[])",
        npm_package="@google/gemini-cli",
    ),
}


def acp_command(settings: WorkerPoolSettings) -> str:
    """The ACP command: ``KIRO_ACP_COMMAND`` when set, else that of the agent ``AIPM_AGENT`` names."""
    explicit = "kiro_acp_command" in settings.model_fields_set
    command = settings.kiro_acp_command if explicit else AGENTS[settings.aipm_agent].acp_command
    if not shlex.split(command):
        raise ValueError("KIRO_ACP_COMMAND is empty after splitting into words")
    return command


def unescape_reply(value: str) -> str:
    """``KIRO_APPROVAL_REPLY`` understands ``\\r`` and ``\\n`` (and ``\\t``, ``\\\\``) written literally."""
    return re.sub(r"\\([rnt\\])", lambda m: {"r": "\r", "n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], value)


def resolve_profile(settings: WorkerPoolSettings) -> AgentProfile:
    """The profile ``KIRO_PROFILE`` names, with every ``KIRO_*`` variable that is set overriding its field."""
    base = PROFILES[settings.kiro_profile]
    overrides: dict[str, object] = {"deny_tools": tuple(settings.deny_tools)}
    if settings.kiro_command:
        if not shlex.split(settings.kiro_command):
            raise ValueError("KIRO_COMMAND is empty after splitting into words")
        overrides["command"] = settings.kiro_command
    if settings.kiro_prompt_pattern:
        overrides["prompt_pattern"] = settings.kiro_prompt_pattern
    if settings.kiro_approval_pattern:
        overrides["approval_pattern"] = settings.kiro_approval_pattern
        overrides["approval_hint"] = ""
    if settings.kiro_approval_reply:
        overrides["approval_reply"] = unescape_reply(settings.kiro_approval_reply)
    return dataclasses.replace(base, **overrides)
