"""The deployment's knobs: every CDK context key read once, validated, into one frozen object.

Owns the context keys (their names, defaults and checks). Constructs receive plain values from this object through
the Stack; nothing else reads ``node.try_get_context``. A bad value stops synthesis with a message naming the key.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from aipm_common.envnames import AGENT_KEY_VARIABLE, HostTools

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)
WEBSITE_MODES = ("cloudfront", "s3-website")
# How the Lambda hands a job to the hosts: straight to the one host's PR processor (http), or through an SQS queue
# that an Auto Scaling group of hosts polls (sqs).
DISPATCH_MODES = ("http", "sqs")
KIRO_DRIVERS = ("acp", "headless", "pty")
# The coding agent the host installs and its workers run (AIPM_AGENT): Kiro, or an open-source ACP agent pinned in
# agents/package-lock.json (claude-code-acp, Gemini CLI) with its model key from Secrets Manager.
AGENTS = ("kiro", "claude-code", "gemini")


@dataclass(frozen=True)
class AgentKey:
    """An open-source agent's model key: the context key naming an existing secret, the id of the secret the stack
    creates otherwise (and of its ``<id>SecretArn`` output), and the variable the agent reads it from."""

    context: str
    secret_id: str
    variable: str


AGENT_KEYS = {
    "claude-code": AgentKey("anthropicApiKeySecretArn", "AnthropicApiKey", AGENT_KEY_VARIABLE["claude-code"]),
    "gemini": AgentKey("geminiApiKeySecretArn", "GeminiApiKey", AGENT_KEY_VARIABLE["gemini"]),
}
# The newest kiro-cli the ACP wire captures in tests/fixtures/kiro-acp cover (kas-content-chunk-2.19.1.jsonl).
KIRO_VERSION = "2.19.1"
# Kiro's own release bucket, one folder per version (`latest` is the folder https://cli.kiro.dev/install takes).
# install-kiro-cli runs it as the agent user with KIRO_VERSION set; Kiro's install.sh puts kiro-cli in ~/.local/bin.
KIRO_INSTALL_COMMAND = (
    'curl --proto =https --tlsv1.2 -fsSL -o /tmp/kirocli.zip '
    f'"https://desktop-release.q.us-east-1.amazonaws.com/${HostTools.KIRO_VERSION}/kirocli-$(uname -m)-linux.zip" '
    '&& rm -rf /tmp/kirocli && unzip -q -o /tmp/kirocli.zip -d /tmp && bash /tmp/kirocli/install.sh --no-confirm'
)
_AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
MAX_HOSTS_LIMIT = 100  # a guard against a typo (40 → 400 hosts), not a service limit
_SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+$")
_REPO_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+/([A-Za-z0-9_.-]+|\*)$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_GROUP = re.compile(r"^[\w+=.@-]{1,128}$")  # a Cognito group name, without the comma the list is split on
_DOMAIN_PREFIX = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class ConfigError(ValueError):
    """A context value that cannot be deployed; the message names the key and what it accepts."""


@dataclass(frozen=True)
class AipmConfig:
    """Everything ``cdk synth -c key=value`` can change, with the defaults of docs/contracts.md ("Infrastructure")."""

    stack_name: str = "AipmKiro"
    instance_type: str = "t3.medium"
    pool_size: int = 2
    api_cidr: str = "0.0.0.0/0"
    admin_cidr: str | None = None
    allowed_repos: str = ""
    log_retention_days: int = 30
    github_api_url: str = "https://api.github.com"
    git_base_url: str = "https://github.com"
    website_mode: str = "cloudfront"
    github_token_secret_arn: str | None = None
    kiro_api_key_secret_arn: str | None = None
    kiro_install_command: str = KIRO_INSTALL_COMMAND
    kiro_deny_tools: str = "use_aws,aws"
    # How the worker pool drives kiro-cli (KIRO_DRIVER), and the kiro-cli version the host installs and keeps.
    kiro_driver: str = "acp"
    kiro_version: str = KIRO_VERSION
    agent: str = "kiro"
    # agent=claude-code / gemini: an existing secret holding the agent's model key (AGENT_KEYS: anthropicApiKeySecretArn,
    # geminiApiKeySecretArn); None = the stack creates one to fill.
    agent_key_secret_arn: str | None = None
    cognito_domain_prefix: str | None = None
    # Cognito groups whose members may use the UI (comma-separated; empty = every user of the pool): AIPM_ALLOWED_GROUPS.
    allowed_groups: str = ""
    alarm_email: str | None = None
    root_volume_gb: int = 30
    # The host's image, pinned: a redeploy after Amazon publishes a new image must not replace the host. Required
    # by app.py (None here lets the other keys be checked without it).
    ami_id: str | None = None
    # dispatch=http: the separate EBS volume (retained, snapshotted daily) holding the state and the agent's sign-in.
    data_volume_gb: int = 50
    dispatch: str = "http"
    # dispatch=sqs only: the Auto Scaling group's size, and the jobs (waiting or running) per in-service host it
    # scales to keep; None = pool_size, i.e. add a host once every host's workers are busy and jobs still wait.
    min_hosts: int = 1
    max_hosts: int = 4
    backlog_per_host: int | None = None

    @property
    def agent_key(self) -> AgentKey | None:
        """The model key the agent needs from Secrets Manager (None for Kiro, which signs in or uses KIRO_API_KEY)."""
        return AGENT_KEYS.get(self.agent)

    @property
    def worker_pool_open(self) -> bool:
        """8081 is reachable from outside (and the pool listens on 0.0.0.0) only with an admin CIDR."""
        return self.admin_cidr is not None

    @property
    def uses_cognito(self) -> bool:
        """Cognito needs an https callback, so only the CloudFront site signs in with it; s3-website uses a token."""
        return self.website_mode == "cloudfront"

    @property
    def uses_queue(self) -> bool:
        """dispatch=sqs: jobs go through the SQS queue to an Auto Scaling group of hosts (no Elastic IP, no 8082)."""
        return self.dispatch == "sqs"

    @property
    def jobs_per_host(self) -> int:
        """The scaling target: jobs waiting or running per in-service host (backlogPerHost, default poolSize)."""
        return self.backlog_per_host if self.backlog_per_host is not None else self.pool_size

    @classmethod
    def from_context(cls, get: Any) -> AipmConfig:
        """Build from ``get(key) -> value | None`` (``app.node.try_get_context``); unset or empty keeps the default."""

        def value(key: str, default: Any) -> Any:
            raw = get(key)
            if raw is None or (isinstance(raw, str) and raw.strip() == ""):
                return default
            return raw.strip() if isinstance(raw, str) else raw

        backlog = value("backlogPerHost", None)
        cfg = cls(
            stack_name=str(value("stackName", cls.stack_name)),
            instance_type=str(value("instanceType", cls.instance_type)),
            pool_size=_int("poolSize", value("poolSize", cls.pool_size)),
            api_cidr=str(value("apiCidr", cls.api_cidr)),
            admin_cidr=value("adminCidr", None),
            allowed_repos=str(value("allowedRepos", cls.allowed_repos)),
            log_retention_days=_int("logRetentionDays", value("logRetentionDays", cls.log_retention_days)),
            github_api_url=str(value("githubApiUrl", cls.github_api_url)).rstrip("/"),
            git_base_url=str(value("gitBaseUrl", cls.git_base_url)).rstrip("/"),
            website_mode=str(value("websiteMode", cls.website_mode)),
            github_token_secret_arn=value("githubTokenSecretArn", None),
            kiro_api_key_secret_arn=value("kiroApiKeySecretArn", None),
            # An empty kiroInstallCommand is meaningful (install kiro-cli yourself), so it is read without the default.
            kiro_install_command=str(get("kiroInstallCommand") if get("kiroInstallCommand") is not None
                                     else cls.kiro_install_command).strip(),
            kiro_deny_tools=str(get("kiroDenyTools") if get("kiroDenyTools") is not None else cls.kiro_deny_tools),
            kiro_driver=str(value("kiroDriver", cls.kiro_driver)).lower(),
            kiro_version=str(value("kiroVersion", cls.kiro_version)),
            agent=str(value("agent", cls.agent)).lower(),
            agent_key_secret_arn=_agent_key_arn(value, str(value("agent", cls.agent)).lower()),
            cognito_domain_prefix=value("cognitoDomainPrefix", None),
            allowed_groups=str(value("allowedGroups", cls.allowed_groups)),
            alarm_email=value("alarmEmail", None),
            root_volume_gb=_int("rootVolumeGb", value("rootVolumeGb", cls.root_volume_gb)),
            ami_id=value("amiId", None),
            data_volume_gb=_int("dataVolumeGb", value("dataVolumeGb", cls.data_volume_gb)),
            dispatch=str(value("dispatch", cls.dispatch)),
            min_hosts=_int("minHosts", value("minHosts", cls.min_hosts)),
            max_hosts=_int("maxHosts", value("maxHosts", cls.max_hosts)),
            backlog_per_host=None if backlog is None else _int("backlogPerHost", backlog),
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Each concern's checks in turn; the first wrong key raises its own message."""
        self._validate_stack()
        self._validate_network()
        self._validate_github()
        self._validate_secrets()
        self._validate_website()
        self._validate_operations()
        self._validate_host()
        self._validate_kiro()
        self._validate_dispatch()

    def _validate_stack(self) -> None:
        if not re.fullmatch(r"^[A-Za-z][A-Za-z0-9-]{0,127}$", self.stack_name):
            raise ConfigError(f"stackName: {self.stack_name!r} is not a CloudFormation stack name")
        if not _INSTANCE_TYPE.fullmatch(self.instance_type):
            raise ConfigError(f"instanceType: {self.instance_type!r} is not an EC2 instance type like t3.medium")
        if not 1 <= self.pool_size <= 32:
            raise ConfigError(f"poolSize: {self.pool_size} must be between 1 and 32 (KIRO_POOL_SIZE)")

    def _validate_network(self) -> None:
        # A bare address is a /32; the security group needs the prefix written out.
        object.__setattr__(self, "api_cidr", _cidr("apiCidr", self.api_cidr))
        if self.admin_cidr is not None:
            object.__setattr__(self, "admin_cidr", _cidr("adminCidr", self.admin_cidr))

    def _validate_github(self) -> None:
        for repo in (r.strip() for r in self.allowed_repos.split(",")):
            if repo and not _REPO_PATTERN.fullmatch(repo):
                raise ConfigError(f"allowedRepos: {repo!r} is not owner/name or owner/*")
        for key, url in (("githubApiUrl", self.github_api_url), ("gitBaseUrl", self.git_base_url)):
            if not re.fullmatch(r"^https://[^/\s]+(/\S*)?$", url):
                raise ConfigError(f"{key}: {url!r} must be an https URL")

    def _validate_secrets(self) -> None:
        for key, arn in (("githubTokenSecretArn", self.github_token_secret_arn),
                         ("kiroApiKeySecretArn", self.kiro_api_key_secret_arn),
                         (self.agent_key.context if self.agent_key else "", self.agent_key_secret_arn)):
            if arn is not None and not _SECRET_ARN.fullmatch(arn):
                raise ConfigError(f"{key}: {arn!r} is not a Secrets Manager secret ARN")

    def _validate_website(self) -> None:
        if self.website_mode not in WEBSITE_MODES:
            raise ConfigError(f"websiteMode: {self.website_mode!r} must be one of {', '.join(WEBSITE_MODES)}")
        if self.cognito_domain_prefix is not None and (
            not _DOMAIN_PREFIX.fullmatch(self.cognito_domain_prefix)
            or any(word in self.cognito_domain_prefix for word in ("aws", "amazon", "cognito"))
        ):
            raise ConfigError(
                f"cognitoDomainPrefix: {self.cognito_domain_prefix!r} must be lower-case letters, digits and hyphens "
                "without 'aws', 'amazon' or 'cognito'"
            )
        for group in (g.strip() for g in self.allowed_groups.split(",")):
            if group and not _GROUP.fullmatch(group):
                raise ConfigError(f"allowedGroups: {group!r} is not a Cognito group name")

    def _validate_operations(self) -> None:
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise ConfigError(
                f"logRetentionDays: {self.log_retention_days} is not a CloudWatch Logs retention; "
                f"use one of {', '.join(map(str, LOG_RETENTION_DAYS))}"
            )
        if self.alarm_email is not None and not re.fullmatch(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", self.alarm_email):
            raise ConfigError(f"alarmEmail: {self.alarm_email!r} is not an e-mail address")

    def _validate_host(self) -> None:
        if not 8 <= self.root_volume_gb <= 16384:
            raise ConfigError(f"rootVolumeGb: {self.root_volume_gb} must be between 8 and 16384")
        if self.ami_id is not None and not _AMI.fullmatch(self.ami_id):
            raise ConfigError(f"amiId: {self.ami_id!r} is not an image id like ami-0123456789abcdef0")
        if not 1 <= self.data_volume_gb <= 16384:
            raise ConfigError(f"dataVolumeGb: {self.data_volume_gb} must be between 1 and 16384")

    def _validate_kiro(self) -> None:
        if "\n" in self.kiro_install_command:
            raise ConfigError("kiroInstallCommand: must be one line")
        if self.agent not in AGENTS:
            raise ConfigError(f"agent: {self.agent!r} must be one of {', '.join(AGENTS)}")
        if self.agent != "kiro" and self.kiro_driver != "acp":
            raise ConfigError(f"kiroDriver: agent={self.agent} speaks ACP only; leave kiroDriver at acp")
        if self.kiro_driver not in KIRO_DRIVERS:
            raise ConfigError(f"kiroDriver: {self.kiro_driver!r} must be one of {', '.join(KIRO_DRIVERS)}")
        if not _VERSION.fullmatch(self.kiro_version):
            raise ConfigError(f"kiroVersion: {self.kiro_version!r} is not a kiro-cli version like {KIRO_VERSION}")
        if self.kiro_driver == "pty" and int(self.kiro_version.split(".")[0]) >= 3:
            # kiro-cli 3.0 retired the classic chat the PTY driver reads: its workers would restart forever.
            raise ConfigError(f"kiroDriver: pty cannot read kiro-cli {self.kiro_version} (3.x has no classic chat); "
                              f"use kiroDriver=acp or headless, or kiroVersion={KIRO_VERSION}")

    def _validate_dispatch(self) -> None:
        if self.dispatch not in DISPATCH_MODES:
            raise ConfigError(
                f"dispatch: {self.dispatch!r} must be one of {', '.join(DISPATCH_MODES)} "
                "(http: the Lambda calls the one host; sqs: an SQS queue and an Auto Scaling group of hosts)"
            )
        # Checked in both modes, so a value meant for sqs is not silently wrong until the mode is switched.
        if not 1 <= self.min_hosts <= MAX_HOSTS_LIMIT:
            raise ConfigError(
                f"minHosts: {self.min_hosts} must be between 1 and {MAX_HOSTS_LIMIT} (the scaling metric divides by "
                "the hosts in service, and the deploy waits for that many installs)"
            )
        if not self.min_hosts <= self.max_hosts <= MAX_HOSTS_LIMIT:
            raise ConfigError(f"maxHosts: {self.max_hosts} must be between minHosts ({self.min_hosts}) "
                              f"and {MAX_HOSTS_LIMIT}")
        if self.backlog_per_host is not None and not 1 <= self.backlog_per_host <= 1000:
            raise ConfigError(f"backlogPerHost: {self.backlog_per_host} must be between 1 and 1000 "
                              "(jobs waiting or running per host; empty = poolSize)")


def _agent_key_arn(value: Any, agent: str) -> str | None:
    """The ARN given for ``agent``'s model key; a key for another agent is refused (it would never be read)."""
    for owner, key in AGENT_KEYS.items():
        if owner != agent and value(key.context, None) is not None:
            raise ConfigError(f"{key.context}: only agent={owner} uses it")
    return value(AGENT_KEYS[agent].context, None) if agent in AGENT_KEYS else None


def _int(key: str, raw: Any) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {raw!r} is not a whole number") from None


def _cidr(key: str, raw: str) -> str:
    try:
        net = ipaddress.ip_network(raw, strict=True)
    except ValueError as exc:
        raise ConfigError(f"{key}: {raw!r} is not a CIDR block ({exc})") from None
    if net.version != 4:
        raise ConfigError(f"{key}: {raw!r} must be an IPv4 CIDR (the host has an IPv4 Elastic IP)")
    return str(net)
