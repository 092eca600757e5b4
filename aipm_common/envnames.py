"""Every environment variable's name, written once (docs/configuration.md; meanings and defaults in contracts.md).

One class per reader. The settings modules read exactly these names (``aipm_common.settings`` takes each field's
variable from here, and a field without one fails at import); ``infra/`` builds the Lambda's environment and the
host install's parameters from them; the host's secret fetcher writes its files with them. Tests hold the shell
scripts and the docs to the same list. Plain strings, nothing imported: the Lambda imports it at cold start, the CDK
app imports it without any service code.

Adding a variable: add it to its reader's class here, then read or set it through the constant.
"""

from __future__ import annotations


class Shared:
    """Read by every service (``aipm_common.settings.ServiceSettings``)."""

    AIPM_SHARED_SECRET = "AIPM_SHARED_SECRET"
    AIPM_INSECURE_DEV = "AIPM_INSECURE_DEV"
    AIPM_STATE_DIR = "AIPM_STATE_DIR"
    AIPM_LOG_LEVEL = "AIPM_LOG_LEVEL"
    AIPM_HEADER_TIMEOUT = "AIPM_HEADER_TIMEOUT"
    AIPM_MAX_CONNECTIONS = "AIPM_MAX_CONNECTIONS"


class Dispatch:
    """How jobs reach the hosts, read by the Lambda API and the PR processor (``DispatchSettings``)."""

    AIPM_DISPATCH = "AIPM_DISPATCH"
    AIPM_JOB_QUEUE_URL = "AIPM_JOB_QUEUE_URL"


class Workspace:
    """The job workspaces' tree, read by both EC2 services (``WorkspaceSettings``)."""

    KIRO_WORKSPACE_ROOT = "KIRO_WORKSPACE_ROOT"


class GitHub:
    """The GitHub token, read by the Lambda API (local runs) and the PR processor (its pushes)."""

    GITHUB_TOKEN = "GITHUB_TOKEN"


class LambdaApi:
    """The Lambda API (``lambda_fn.settings``)."""

    GITHUB_API_URL = "GITHUB_API_URL"
    GITHUB_TOKEN_SECRET_ARN = "GITHUB_TOKEN_SECRET_ARN"
    GITHUB_APP_ID = "GITHUB_APP_ID"
    GITHUB_APP_PRIVATE_KEY_SECRET_ARN = "GITHUB_APP_PRIVATE_KEY_SECRET_ARN"
    GITHUB_APP_INSTALLATION_ID = "GITHUB_APP_INSTALLATION_ID"
    PR_PROCESSOR_URL = "PR_PROCESSOR_URL"
    PR_PROCESSOR_CERT_SHA256 = "PR_PROCESSOR_CERT_SHA256"
    PR_PROCESSOR_CERT_PARAMETER = "PR_PROCESSOR_CERT_PARAMETER"
    AIPM_SHARED_SECRET_ARN = "AIPM_SHARED_SECRET_ARN"
    PUBLIC_API_URL = "PUBLIC_API_URL"
    AIPM_AUTH = "AIPM_AUTH"
    AIPM_UI_TOKEN = "AIPM_UI_TOKEN"
    AIPM_UI_TOKEN_SECRET_ARN = "AIPM_UI_TOKEN_SECRET_ARN"
    AIPM_ALLOWED_GROUPS = "AIPM_ALLOWED_GROUPS"
    COGNITO_USER_POOL_ID = "COGNITO_USER_POOL_ID"
    COGNITO_CLIENT_ID = "COGNITO_CLIENT_ID"
    COGNITO_REGION = "COGNITO_REGION"
    COGNITO_DOMAIN = "COGNITO_DOMAIN"
    COGNITO_JWKS_URL = "COGNITO_JWKS_URL"
    AIPM_RATE_LIMIT_PER_MINUTE = "AIPM_RATE_LIMIT_PER_MINUTE"
    ALLOWED_ORIGINS = "ALLOWED_ORIGINS"
    AIPM_FORGE = "AIPM_FORGE"
    AIPM_LOCAL_FORGE_DIR = "AIPM_LOCAL_FORGE_DIR"
    AIPM_ALLOWED_REPOS = "AIPM_ALLOWED_REPOS"
    AIPM_GITHUB_WEBHOOK_SECRET = "AIPM_GITHUB_WEBHOOK_SECRET"
    AIPM_GITHUB_WEBHOOK_SECRET_ARN = "AIPM_GITHUB_WEBHOOK_SECRET_ARN"
    AIPM_FOLLOWUP_PREFIX = "AIPM_FOLLOWUP_PREFIX"
    AIPM_API_HOST = "AIPM_API_HOST"
    AIPM_API_PORT = "AIPM_API_PORT"
    AIPM_UI_DIR = "AIPM_UI_DIR"
    GITHUB_RATE_LIMIT_MAX_WAIT = "GITHUB_RATE_LIMIT_MAX_WAIT"
    AIPM_DEADLINE_MARGIN = "AIPM_DEADLINE_MARGIN"


class WorkerPool:
    """The worker pool (``ec2_services.worker_pool.settings``)."""

    WORKER_POOL_HOST = "WORKER_POOL_HOST"
    WORKER_POOL_PORT = "WORKER_POOL_PORT"
    KIRO_POOL_SIZE = "KIRO_POOL_SIZE"
    KIRO_PROFILE = "KIRO_PROFILE"
    KIRO_COMMAND = "KIRO_COMMAND"
    KIRO_PROMPT_PATTERN = "KIRO_PROMPT_PATTERN"
    KIRO_APPROVAL_PATTERN = "KIRO_APPROVAL_PATTERN"
    KIRO_APPROVAL_REPLY = "KIRO_APPROVAL_REPLY"
    KIRO_DENY_TOOLS = "KIRO_DENY_TOOLS"
    KIRO_DRIVER = "KIRO_DRIVER"
    AIPM_AGENT = "AIPM_AGENT"
    ANTHROPIC_API_KEY = "ANTHROPIC_API_KEY"
    GEMINI_API_KEY = "GEMINI_API_KEY"
    AIPM_MODEL = "AIPM_MODEL"
    KIRO_ACP_COMMAND = "KIRO_ACP_COMMAND"
    KIRO_HEADLESS_COMMAND = "KIRO_HEADLESS_COMMAND"
    KIRO_TRUST_TOOLS = "KIRO_TRUST_TOOLS"
    KIRO_TASK_TIMEOUT = "KIRO_TASK_TIMEOUT"
    KIRO_RUN_AS = "KIRO_RUN_AS"
    KIRO_QUEUE_LIMIT = "KIRO_QUEUE_LIMIT"
    KIRO_STALL_TIMEOUT = "KIRO_STALL_TIMEOUT"
    KIRO_TROUBLE_RETRIES = "KIRO_TROUBLE_RETRIES"
    KIRO_TROUBLE_BACKOFF = "KIRO_TROUBLE_BACKOFF"
    KIRO_RESULT_TTL = "KIRO_RESULT_TTL"
    KIRO_TASK_DB = "KIRO_TASK_DB"


class PrProcessor:
    """The PR processor (``ec2_services.pr_processor.settings``)."""

    PR_PROCESSOR_HOST = "PR_PROCESSOR_HOST"
    PR_PROCESSOR_PORT = "PR_PROCESSOR_PORT"
    PR_PROCESSOR_TLS_CERT = "PR_PROCESSOR_TLS_CERT"
    PR_PROCESSOR_TLS_KEY = "PR_PROCESSOR_TLS_KEY"
    WORKER_POOL_URL = "WORKER_POOL_URL"
    PR_PROCESSOR_DB = "PR_PROCESSOR_DB"
    PR_MAX_ATTEMPTS = "PR_MAX_ATTEMPTS"
    AIPM_TEST_COMMAND = "AIPM_TEST_COMMAND"
    AIPM_TEST_TIMEOUT = "AIPM_TEST_TIMEOUT"
    PR_RETRY_BASE_DELAY = "PR_RETRY_BASE_DELAY"
    PR_CALLBACK_MAX_AGE = "PR_CALLBACK_MAX_AGE"
    PR_JOB_RETENTION_DAYS = "PR_JOB_RETENTION_DAYS"
    PR_POOL_BUSY_WAIT = "PR_POOL_BUSY_WAIT"
    PR_POOL_DOWN_WAIT = "PR_POOL_DOWN_WAIT"
    GIT_BASE_URL = "GIT_BASE_URL"
    AIPM_CALLBACK_ORIGINS = "AIPM_CALLBACK_ORIGINS"
    GIT_AUTHOR_NAME = "GIT_AUTHOR_NAME"
    GIT_AUTHOR_EMAIL = "GIT_AUTHOR_EMAIL"
    PR_SQS_WAIT_S = "PR_SQS_WAIT_S"
    PR_SQS_VISIBILITY_S = "PR_SQS_VISIBILITY_S"
    AIPM_ASG_NAME = "AIPM_ASG_NAME"


class Agent:
    """Read by the agent CLIs themselves: Kiro's API key, handed over in the worker pool's environment, and what
    ``make run`` points claude-code and gemini at (the scripted model, Gemini's model and settings)."""

    KIRO_API_KEY = "KIRO_API_KEY"
    ANTHROPIC_BASE_URL = "ANTHROPIC_BASE_URL"
    GOOGLE_GEMINI_BASE_URL = "GOOGLE_GEMINI_BASE_URL"
    GEMINI_MODEL = "GEMINI_MODEL"
    GEMINI_CLI_SYSTEM_SETTINGS_PATH = "GEMINI_CLI_SYSTEM_SETTINGS_PATH"
    # Set or kept from the agent by its profile (ec2_services/worker_pool/profiles.py).
    ANTHROPIC_AUTH_TOKEN = "ANTHROPIC_AUTH_TOKEN"
    CLAUDE_CODE_OAUTH_TOKEN = "CLAUDE_CODE_OAUTH_TOKEN"
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"
    IS_SANDBOX = "IS_SANDBOX"
    GEMINI_CLI_NO_RELAUNCH = "GEMINI_CLI_NO_RELAUNCH"
    GOOGLE_GENAI_USE_VERTEXAI = "GOOGLE_GENAI_USE_VERTEXAI"
    GOOGLE_GENAI_USE_GCA = "GOOGLE_GENAI_USE_GCA"
    OPENAI_API_KEY = "OPENAI_API_KEY"
    GOOGLE_API_KEY = "GOOGLE_API_KEY"


class HostInstall:
    """``infra/host_install/install.sh``'s parameters, set by ``infra/host.py`` through cfn-init (or by hand with
    ``--prefix``)."""

    # Passed on under the same name: to a service's environment file, or (the ARN) to secrets.conf.
    AIPM_AGENT = WorkerPool.AIPM_AGENT
    AIPM_CALLBACK_ORIGINS = PrProcessor.AIPM_CALLBACK_ORIGINS
    AIPM_DISPATCH = Dispatch.AIPM_DISPATCH
    AIPM_JOB_QUEUE_URL = Dispatch.AIPM_JOB_QUEUE_URL
    AIPM_ASG_NAME = PrProcessor.AIPM_ASG_NAME
    AIPM_SHARED_SECRET_ARN = LambdaApi.AIPM_SHARED_SECRET_ARN
    # The install's own:
    AIPM_POOL_SIZE = "AIPM_POOL_SIZE"
    AIPM_WORKER_POOL_HOST = "AIPM_WORKER_POOL_HOST"
    AIPM_WORKER_POOL_PORT = "AIPM_WORKER_POOL_PORT"
    AIPM_PR_PROCESSOR_HOST = "AIPM_PR_PROCESSOR_HOST"
    AIPM_PR_PROCESSOR_PORT = "AIPM_PR_PROCESSOR_PORT"
    AIPM_GIT_BASE_URL = "AIPM_GIT_BASE_URL"
    AIPM_KIRO_DENY_TOOLS = "AIPM_KIRO_DENY_TOOLS"
    AIPM_KIRO_INSTALL_COMMAND = "AIPM_KIRO_INSTALL_COMMAND"
    AIPM_KIRO_DRIVER = "AIPM_KIRO_DRIVER"
    AIPM_KIRO_VERSION = "AIPM_KIRO_VERSION"
    AIPM_KIRO_COMMAND = "AIPM_KIRO_COMMAND"
    AIPM_KIRO_ACP_COMMAND = "AIPM_KIRO_ACP_COMMAND"
    AIPM_KIRO_HEADLESS_COMMAND = "AIPM_KIRO_HEADLESS_COMMAND"
    AIPM_SERVICE_USER = "AIPM_SERVICE_USER"
    AIPM_AGENT_USER = "AIPM_AGENT_USER"
    AIPM_KIRO_BIN = "AIPM_KIRO_BIN"
    AIPM_GITHUB_TOKEN_SECRET_ARN = "AIPM_GITHUB_TOKEN_SECRET_ARN"
    AIPM_KIRO_API_KEY_SECRET_ARN = "AIPM_KIRO_API_KEY_SECRET_ARN"
    AIPM_AGENT_KEY_SECRET_ARN = "AIPM_AGENT_KEY_SECRET_ARN"
    AIPM_AWS_REGION = "AIPM_AWS_REGION"
    AIPM_LOG_GROUP_WORKER_POOL = "AIPM_LOG_GROUP_WORKER_POOL"
    AIPM_LOG_GROUP_PR_PROCESSOR = "AIPM_LOG_GROUP_PR_PROCESSOR"
    AIPM_SQS_WAIT_S = "AIPM_SQS_WAIT_S"
    AIPM_SQS_VISIBILITY_S = "AIPM_SQS_VISIBILITY_S"
    AIPM_TLS_CERT_PARAMETER = "AIPM_TLS_CERT_PARAMETER"
    AIPM_DATA_VOLUME_ID = "AIPM_DATA_VOLUME_ID"
    AIPM_DATA_MOUNT = "AIPM_DATA_MOUNT"
    AIPM_DATA_BINDS = "AIPM_DATA_BINDS"


class HostTools:
    """Parameters of the installer's helpers: ``aipm-fetch-secrets`` (from ``/etc/aipm/secrets.conf``),
    ``aipm-data-volume`` (``/etc/aipm/data-volume.conf``) and ``install-kiro-cli``."""

    AIPM_SECRETS_DIR = "AIPM_SECRETS_DIR"
    AIPM_AWS_CLI = "AIPM_AWS_CLI"
    AIPM_DATA_DEVICE = "AIPM_DATA_DEVICE"
    AIPM_INSTANCE_ID = "AIPM_INSTANCE_ID"
    KIRO_VERSION = "KIRO_VERSION"
    KIRO_INSTALL_COMMAND = "KIRO_INSTALL_COMMAND"


class Platform:
    """Other programs' variables the host's environment files set: boto3/the AWS CLI, Python, git."""

    AWS_REGION = "AWS_REGION"
    AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
    PYTHONUNBUFFERED = "PYTHONUNBUFFERED"
    GIT_CONFIG_COUNT = "GIT_CONFIG_COUNT"
    GIT_CONFIG_KEY_0 = "GIT_CONFIG_KEY_0"
    GIT_CONFIG_VALUE_0 = "GIT_CONFIG_VALUE_0"


# Where each open-source agent reads its model key (AIPM_AGENT → variable): the host's aipm-fetch-secrets writes the
# key from AIPM_AGENT_KEY_SECRET_ARN under this name, and the worker pool hands it to that agent alone.
AGENT_KEY_VARIABLE = {"claude-code": WorkerPool.ANTHROPIC_API_KEY, "gemini": WorkerPool.GEMINI_API_KEY}

GROUPS = (Shared, Dispatch, Workspace, GitHub, LambdaApi, WorkerPool, PrProcessor, Agent, HostInstall, HostTools,
          Platform)


def names(group: type) -> tuple[str, ...]:
    """The variables one class declares, in the order written."""
    return tuple(value for key, value in vars(group).items() if key.isupper())


ALL = frozenset(name for group in GROUPS for name in names(group))
_BY_FIELD = {name.lower(): name for name in ALL}


def settings_alias(field: str) -> str:
    """A settings field's variable (pydantic's alias generator): a field whose name is not declared here fails at
    import, naming it."""
    try:
        return _BY_FIELD[field]
    except KeyError:
        raise LookupError(f"settings field {field!r} has no variable in aipm_common.envnames") from None
