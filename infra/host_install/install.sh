#!/usr/bin/env bash
# Installs aipm-kiro's EC2 services on Amazon Linux 2023. cfn-init runs it as root on first boot (and again through
# cfn-hup when a deploy changes the code); a non-zero exit fails cfn-init, so the CreationPolicy fails the deploy.
#
# It also runs on any Linux machine with --prefix DIR: everything lands under DIR (a scratch root), and the steps that
# need root or systemd (dnf, users, ownership, iptables, kiro-cli download, systemctl) are skipped. The
# rendered units and environment files then name paths under DIR, so their ExecStart lines run as they are.
#
#   install.sh [--prefix DIR] [--source DIR] [--python PATH] [--extra-site DIR]
#
#   --source      holds ec2_services/, aipm_common/ and requirements/host.txt (default: this script's ../..; /opt/aipm/src on EC2)
#   --python      interpreter for the venv (default /usr/bin/python3.12; with --prefix: python3.12 or python3)
#   --extra-site  offline/test fast path: a site-packages directory added to the venv's path, so the requirements
#                 are satisfied from it and pip checks them with --no-index instead of downloading
#
# Deployment values come from the environment (host.py passes them through cfn-init); every one has a default:
#   AIPM_POOL_SIZE, AIPM_WORKER_POOL_HOST, AIPM_WORKER_POOL_PORT, AIPM_PR_PROCESSOR_HOST, AIPM_PR_PROCESSOR_PORT,
#   AIPM_CALLBACK_ORIGINS, AIPM_GIT_BASE_URL, AIPM_KIRO_DENY_TOOLS, AIPM_KIRO_COMMAND, AIPM_KIRO_ACP_COMMAND,
#   AIPM_KIRO_DRIVER (acp|headless|pty, default acp), AIPM_KIRO_VERSION (the pinned kiro-cli, see install-kiro-cli),
#   AIPM_TLS_CERT_PARAMETER (dispatch=http: 8082 serves TLS with a key and self-signed certificate made here once;
#   the certificate's SHA-256 is published to this SSM parameter, the Lambda's pin),
#   AIPM_DATA_VOLUME_ID, AIPM_DATA_MOUNT, AIPM_DATA_BINDS (dispatch=http: the retained data volume, aipm-data-volume),
#   AIPM_AGENT (kiro|claude-code|gemini: what is installed and run), AIPM_AGENT_KEY_SECRET_ARN (claude-code, gemini:
#   the secret holding the agent's model key),
#   AIPM_KIRO_INSTALL_COMMAND, AIPM_SHARED_SECRET_ARN, AIPM_GITHUB_TOKEN_SECRET_ARN, AIPM_KIRO_API_KEY_SECRET_ARN,
#   AIPM_AWS_REGION, AIPM_LOG_GROUP_WORKER_POOL, AIPM_LOG_GROUP_PR_PROCESSOR,
#   AIPM_DISPATCH (http|sqs), and with sqs: AIPM_JOB_QUEUE_URL, AIPM_SQS_WAIT_S, AIPM_SQS_VISIBILITY_S,
#   AIPM_ASG_NAME (the host's Auto Scaling group: the PR processor protects the host from scale-in while it has jobs)
#
# Signing Kiro in (the agent runs as the `kiro` user, its login lives in ~kiro):
#   - API key: deploy with -c kiroApiKeySecretArn=<secret holding KIRO_API_KEY>; aipm-secrets.service puts it in the
#     worker pool's environment, which the agent inherits (the pool strips only the services' own secrets).
#     Kiro documents API keys for headless (--no-interactive) use; if your plan's key is refused by the interactive
#     chat the pool drives, use the device flow below.
#   - Device flow: aws ssm start-session --target <instance>, then
#       sudo -u kiro -H /usr/local/bin/kiro-cli login --use-device-flow
#     open the URL it prints, sign in, then: sudo systemctl restart aipm-worker-pool
set -euo pipefail

log() { printf '[aipm-install] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX=""
SOURCE="$(cd "$HERE/../.." && pwd)"
PYTHON=""
EXTRA_SITE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
    --source) SOURCE="$(cd "$2" && pwd)"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --extra-site) EXTRA_SITE="$(cd "$2" && pwd)"; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

ON_HOST=1
[ -n "$PREFIX" ] && ON_HOST=0
if [ "$ON_HOST" = 1 ] && [ "$(id -u)" != 0 ]; then die "run as root, or with --prefix DIR for a scratch install"; fi
if [ "$ON_HOST" = 1 ]; then
  # cfn-init replaces the whole environment with the command's `env`: restore what the tools below expect.
  export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
  export HOME="${HOME:-/root}"
fi

SERVICE_USER="${AIPM_SERVICE_USER:-aipm}"
AGENT_USER="${AIPM_AGENT_USER:-kiro}"
KIRO_BIN="${AIPM_KIRO_BIN:-/usr/local/bin/kiro-cli}"
APP="$PREFIX/opt/aipm/app"
VENV="$PREFIX/opt/aipm/venv"
BIN="$PREFIX/opt/aipm/bin"
ETC="$PREFIX/etc/aipm"
UNITS="$PREFIX/etc/systemd/system"
STATE="$PREFIX/var/lib/aipm"
WORKSPACES="$STATE/workspaces"
LOGS="$PREFIX/var/log/aipm"
SECRETS_DIR="$PREFIX/run/aipm/secrets"
KIRO_HOME="$PREFIX/home/$AGENT_USER"
CW_CONFIG="$PREFIX/opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.json"

POOL_SIZE="${AIPM_POOL_SIZE:-2}"
POOL_HOST="${AIPM_WORKER_POOL_HOST:-127.0.0.1}"
POOL_PORT="${AIPM_WORKER_POOL_PORT:-8081}"
PRP_HOST="${AIPM_PR_PROCESSOR_HOST:-0.0.0.0}"
PRP_PORT="${AIPM_PR_PROCESSOR_PORT:-8082}"
CALLBACK_ORIGINS="${AIPM_CALLBACK_ORIGINS:-}"
GIT_BASE_URL="${AIPM_GIT_BASE_URL:-https://github.com}"
DENY_TOOLS="${AIPM_KIRO_DENY_TOOLS-use_aws,aws}"
KIRO_DRIVER="${AIPM_KIRO_DRIVER:-acp}"
AGENT="${AIPM_AGENT:-kiro}"
AGENTS_DIR="$PREFIX/opt/aipm/agents"
KIRO_VERSION="${AIPM_KIRO_VERSION:-2.19.1}"
# Kiro's built-in tools (2.x names; use_aws is the older name of aws): the agent config offers these minus the denied.
KIRO_TOOLS="read,write,shell,grep,glob,code,web_search,web_fetch,introspect,knowledge,todo_list,thinking,delegate,subagent,use_aws,aws"
KIRO_INSTALL_COMMAND="${AIPM_KIRO_INSTALL_COMMAND-}"
LOG_GROUP_POOL="${AIPM_LOG_GROUP_WORKER_POOL:-/aipm/worker-pool}"
LOG_GROUP_PRP="${AIPM_LOG_GROUP_PR_PROCESSOR:-/aipm/pr-processor}"
DISPATCH="${AIPM_DISPATCH:-http}"
JOB_QUEUE_URL="${AIPM_JOB_QUEUE_URL:-}"
SQS_WAIT_S="${AIPM_SQS_WAIT_S:-20}"
SQS_VISIBILITY_S="${AIPM_SQS_VISIBILITY_S:-300}"
ASG_NAME="${AIPM_ASG_NAME:-}"
DATA_VOLUME_ID="${AIPM_DATA_VOLUME_ID:-}"
TLS_PARAMETER="${AIPM_TLS_CERT_PARAMETER:-}"
TLS_DIR="$STATE/tls"

for package in ec2_services aipm_common; do
  [ -d "$SOURCE/$package" ] || die "$SOURCE/$package not found (--source)"
done
[ -f "$SOURCE/requirements/host.txt" ] || die "$SOURCE/requirements/host.txt not found (--source)"
case "$POOL_SIZE" in ''|*[!0-9]*) die "AIPM_POOL_SIZE must be a number, got '$POOL_SIZE'" ;; esac
case "$KIRO_DRIVER" in acp|headless|pty) ;; *) die "AIPM_KIRO_DRIVER must be acp, headless or pty, got '$KIRO_DRIVER'" ;; esac
case "$AGENT" in
  kiro) ;;
  claude-code|gemini)
    [ "$KIRO_DRIVER" = acp ] || die "AIPM_AGENT=$AGENT speaks ACP only, got AIPM_KIRO_DRIVER=$KIRO_DRIVER"
    [ -f "$SOURCE/agents/package-lock.json" ] || die "$SOURCE/agents/package-lock.json not found (the pinned agents)" ;;
  *) die "AIPM_AGENT must be kiro, claude-code or gemini, got '$AGENT'" ;;
esac
case "$DISPATCH" in
  http) ;;
  sqs)
    [ -n "$JOB_QUEUE_URL" ] || die "AIPM_DISPATCH=sqs needs AIPM_JOB_QUEUE_URL (the job queue the PR processor polls)"
    for value in "$SQS_WAIT_S" "$SQS_VISIBILITY_S"; do
      case "$value" in ''|*[!0-9]*) die "AIPM_SQS_WAIT_S and AIPM_SQS_VISIBILITY_S must be numbers, got '$value'" ;; esac
    done ;;
  *) die "AIPM_DISPATCH must be http or sqs, got '$DISPATCH'" ;;
esac

# --- 1. System packages and users (host only) -----------------------------------------------------------------------
if [ "$ON_HOST" = 1 ]; then
  log "installing system packages"
  dnf install -y -q git python3.12 python3.12-pip util-linux iptables-nft unzip logrotate amazon-cloudwatch-agent >&2
  if [ "$AGENT" != kiro ]; then
    dnf install -y -q nodejs20 nodejs20-npm >&2
    # AL2023 names them node-20 / npm-20; the agent's `#!/usr/bin/env node` needs a `node` on the PATH.
    command -v node >/dev/null || ln -sf "$(command -v node-20)" /usr/local/bin/node
    command -v npm >/dev/null || ln -sf "$(command -v npm-20)" /usr/local/bin/npm
  fi
  getent group "$SERVICE_USER" >/dev/null || groupadd --system "$SERVICE_USER"
  id -u "$SERVICE_USER" >/dev/null 2>&1 || useradd --system --gid "$SERVICE_USER" --home-dir "$STATE" \
    --no-create-home --shell /sbin/nologin "$SERVICE_USER"
  # kiro has a real home (its login and agent config live there) and shares the aipm group for the workspaces.
  id -u "$AGENT_USER" >/dev/null 2>&1 || useradd --system --create-home --home-dir "/home/$AGENT_USER" \
    --user-group --groups "$SERVICE_USER" --shell /bin/bash "$AGENT_USER"
  usermod -a -G "$SERVICE_USER" "$AGENT_USER"
fi
AGENT_GROUP="$(id -gn "$AGENT_USER" 2>/dev/null || echo "$AGENT_USER")"

# --- 1b. The data volume (dispatch=http): state and the agent's sign-in, before anything is written there ----------
if [ -n "$DATA_VOLUME_ID" ]; then
  mkdir -p "$ETC" "$BIN"
  cp "$HERE/aipm-data-volume" "$BIN/aipm-data-volume"
  chmod 0755 "$BIN/aipm-data-volume"
  cat > "$ETC/data-volume.conf" <<EOF
AIPM_DATA_VOLUME_ID=$DATA_VOLUME_ID
AIPM_DATA_MOUNT=${AIPM_DATA_MOUNT:-/data}
AIPM_DATA_BINDS=${AIPM_DATA_BINDS:-}
AWS_REGION=${AIPM_AWS_REGION:-}
EOF
  chmod 0644 "$ETC/data-volume.conf"
  if [ "$ON_HOST" = 1 ]; then
    if ! mountpoint -q "${AIPM_DATA_MOUNT:-/data}"; then
      # A host installed before the data volume existed: its services stop while their files move over.
      systemctl stop aipm-pr-processor.service aipm-worker-pool.service 2>/dev/null || true
    fi
    env AIPM_DATA_VOLUME_ID="$DATA_VOLUME_ID" AIPM_DATA_MOUNT="${AIPM_DATA_MOUNT:-/data}" \
      AIPM_DATA_BINDS="${AIPM_DATA_BINDS:-}" AWS_REGION="${AIPM_AWS_REGION:-}" "$BIN/aipm-data-volume" all \
      || die "the data volume $DATA_VOLUME_ID could not be attached and mounted"
    # The agent's folders on the volume are its own (the bind mounts were made by root).
    chown "$AGENT_USER:$AGENT_USER" "/home/$AGENT_USER/.local" "/home/$AGENT_USER/.local/share"
    chown -R "$AGENT_USER:$AGENT_USER" "/home/$AGENT_USER/.local/share/kiro-cli" "/home/$AGENT_USER/.kiro"
  fi
fi
# The agent runs as its own user: the pool (user aipm, with CAP_SETUID/SETGID/KILL as ambient capabilities from its
# unit) starts it through setpriv, which drops to the agent user with no capabilities and no_new_privs (no sudo, no
# setuid binary can raise it again). The agent cannot read the services' /proc entries or secret files, the iptables
# rule below keys on its uid, and the pool can still signal it (CAP_KILL) to cancel or respawn a session.
AS_AGENT="setpriv --reuid=$AGENT_USER --regid=$AGENT_GROUP --init-groups --inh-caps=-all --ambient-caps=-all --nnp --"
AS_AGENT="$AS_AGENT /usr/bin/env HOME=/home/$AGENT_USER USER=$AGENT_USER LOGNAME=$AGENT_USER"
KIRO_COMMAND="${AIPM_KIRO_COMMAND:-$AS_AGENT $KIRO_BIN chat --legacy-ui --agent aipm}"
if [ "$AGENT" = claude-code ]; then
  KIRO_ACP_COMMAND="${AIPM_KIRO_ACP_COMMAND:-$AS_AGENT $AGENTS_DIR/node_modules/.bin/claude-code-acp}"
elif [ "$AGENT" = gemini ]; then
  # Its system settings file (no usage statistics sent to Google) comes with the agents, read-only to the agent.
  KIRO_ACP_COMMAND="${AIPM_KIRO_ACP_COMMAND:-$AS_AGENT GEMINI_CLI_SYSTEM_SETTINGS_PATH=$AGENTS_DIR/gemini-settings.json $AGENTS_DIR/node_modules/.bin/gemini --acp}"
else
  KIRO_ACP_COMMAND="${AIPM_KIRO_ACP_COMMAND:-$AS_AGENT $KIRO_BIN acp --agent-engine v2 --agent aipm}"
fi
KIRO_HEADLESS_COMMAND="${AIPM_KIRO_HEADLESS_COMMAND:-$AS_AGENT $KIRO_BIN chat --agent aipm}"
if [ -z "$PYTHON" ]; then
  if [ "$ON_HOST" = 1 ]; then PYTHON=/usr/bin/python3.12
  else PYTHON="$(command -v python3.12 || command -v python3)"; fi
fi
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || die "$PYTHON is older than Python 3.11"

# --- 2. The code and its venv ---------------------------------------------------------------------------------------
log "installing ec2_services and aipm_common into $APP"
mkdir -p "$APP/requirements" "$BIN" "$ETC" "$UNITS" "$LOGS" "$WORKSPACES" "$SECRETS_DIR"
for package in ec2_services aipm_common; do
  rm -rf "$APP/$package.new"
  cp -R "$SOURCE/$package" "$APP/$package.new"
  find "$APP/$package.new" -name __pycache__ -type d -prune -exec rm -rf {} +
  rm -rf "$APP/$package"
  mv "$APP/$package.new" "$APP/$package"
done
cp "$SOURCE/requirements/host.txt" "$APP/requirements/host.txt"
cp "$HERE/aipm-fetch-secrets" "$BIN/aipm-fetch-secrets"
cp "$HERE/install-kiro-cli" "$BIN/install-kiro-cli"
chmod 0755 "$BIN/aipm-fetch-secrets" "$BIN/install-kiro-cli"

log "building the venv in $VENV with $PYTHON"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# ec2_services and aipm_common are imported from $APP (a .pth line): `python -m ec2_services.worker_pool` runs anywhere.
printf '%s\n' "$APP" > "$SITE/aipm-app.pth"
PIP_ARGS=(--disable-pip-version-check --quiet --no-input)
if [ -n "$EXTRA_SITE" ]; then
  printf '%s\n' "$EXTRA_SITE" > "$SITE/aipm-extra-site.pth"
  PIP_ARGS+=(--no-index)
else
  rm -f "$SITE/aipm-extra-site.pth"
  "$VENV/bin/python" -m pip install "${PIP_ARGS[@]}" --upgrade pip >&2
fi
"$VENV/bin/python" -m pip install "${PIP_ARGS[@]}" -r "$APP/requirements/host.txt" >&2 \
  || die "pip could not install requirements/host.txt into $VENV"
for module in aipm_common ec2_services.worker_pool ec2_services.pr_processor; do
  "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)" \
    || die "$module is not importable from $VENV"
done

# --- 3. The agent: kiro-cli (pinned, no auto-update) and its agent config, or an open-source agent (npm, lock file) -
mkdir -p "$KIRO_HOME/.kiro/agents"
if [ "$AGENT" != kiro ]; then
  mkdir -p "$AGENTS_DIR"
  cp "$SOURCE/agents/package.json" "$SOURCE/agents/package-lock.json" "$SOURCE/agents/gemini-settings.json" "$AGENTS_DIR/"
  AGENT_BIN="$AGENTS_DIR/node_modules/.bin/$([ "$AGENT" = gemini ] && echo gemini || echo claude-code-acp)"
  if [ "$ON_HOST" = 1 ]; then
    log "installing the $AGENT agent from agents/package-lock.json into $AGENTS_DIR"
    (cd "$AGENTS_DIR" && npm ci --omit=dev --no-audit --no-fund >&2) || die "npm ci of agents/package-lock.json failed"
    [ -x "$AGENT_BIN" ] || die "$AGENT_BIN is not there after npm ci"
  fi
elif [ "$ON_HOST" = 1 ] && [ -n "$KIRO_INSTALL_COMMAND" ]; then
  found="$(runuser -u "$AGENT_USER" -- env HOME="/home/$AGENT_USER" KIRO_VERSION="$KIRO_VERSION" \
    KIRO_INSTALL_COMMAND="$KIRO_INSTALL_COMMAND" bash "$BIN/install-kiro-cli")" || die "kiro-cli $KIRO_VERSION: not installed"
  ln -sf "$found" /usr/local/bin/kiro-cli
elif [ "$ON_HOST" = 1 ]; then
  log "kiroInstallCommand is empty: install kiro-cli $KIRO_VERSION yourself as /usr/local/bin/kiro-cli (see the README)"
fi
# The `aipm` agent. The worker pool approves each request itself (KIRO_DENY_TOOLS), so nothing is pre-trusted
# (allowedTools is empty); the denied tools are also left out of `tools`, so Kiro does not offer them at all: a denied
# tool is refused twice over. No MCP servers: the agent needs the workspace, a shell and the web, nothing more.
"$VENV/bin/python" - "$KIRO_HOME/.kiro/agents/aipm.json" "$KIRO_TOOLS" "$DENY_TOOLS" <<'PY'
import json, sys
split = lambda text: [t.strip() for t in text.split(",") if t.strip()]
denied = set(split(sys.argv[3]))
config = {
    "name": "aipm",
    "description": "aipm-kiro: implements the TASK.md of a pull request in the current workspace",
    "prompt": "You implement the task described in the TASK.md file named in each request, inside the workspace "
              "directory the request names. Change only files inside that workspace. Keep changes focused, add or "
              "update tests, and run them. Do not push, do not change git remotes or configuration, and do not try "
              "to reach cloud credentials or the instance metadata service.",
    "mcpServers": {},
    "tools": [tool for tool in split(sys.argv[2]) if tool not in denied],
    "allowedTools": [],
    "resources": [],
    "useLegacyMcpJson": False,
}
with open(sys.argv[1], "w") as out:
    json.dump(config, out, indent=2)
    out.write("\n")
PY

# --- 4. Configuration (non-secret) and the secret fetcher's parameters ---------------------------------------------
cat > "$ETC/common.env" <<EOF
AIPM_STATE_DIR=$STATE
KIRO_WORKSPACE_ROOT=$WORKSPACES
AIPM_LOG_LEVEL=INFO
PYTHONUNBUFFERED=1
# Worktrees are made by the PR processor (user aipm) and worked in by the agent (user kiro): git must not refuse
# either of them as "dubious ownership". Set through the environment, so no global git config is touched.
GIT_CONFIG_COUNT=1
GIT_CONFIG_KEY_0=safe.directory
GIT_CONFIG_VALUE_0=*
EOF
cat > "$ETC/worker-pool.env" <<EOF
AIPM_AGENT=$AGENT
WORKER_POOL_HOST=$POOL_HOST
WORKER_POOL_PORT=$POOL_PORT
KIRO_POOL_SIZE=$POOL_SIZE
KIRO_COMMAND=$KIRO_COMMAND
KIRO_ACP_COMMAND=$KIRO_ACP_COMMAND
KIRO_RUN_AS=$AS_AGENT
KIRO_HEADLESS_COMMAND=$KIRO_HEADLESS_COMMAND
KIRO_DENY_TOOLS=$DENY_TOOLS
KIRO_DRIVER=$KIRO_DRIVER
EOF
cat > "$ETC/pr-processor.env" <<EOF
PR_PROCESSOR_HOST=$PRP_HOST
PR_PROCESSOR_PORT=$PRP_PORT
WORKER_POOL_URL=http://127.0.0.1:$POOL_PORT
GIT_BASE_URL=$GIT_BASE_URL
AIPM_CALLBACK_ORIGINS=$CALLBACK_ORIGINS
EOF
if [ -n "$TLS_PARAMETER" ]; then
  # 8082 over TLS: the key and certificate are made once and kept with the state (the data volume), so a rebuilt
  # host keeps the certificate the Lambda pinned. openssl prints the fingerprint; the Lambda reads it from SSM.
  mkdir -p "$TLS_DIR"
  if [ ! -s "$TLS_DIR/key.pem" ] || [ ! -s "$TLS_DIR/cert.pem" ]; then
    log "making the PR processor's TLS key and self-signed certificate in $TLS_DIR"
    (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=aipm-pr-processor" -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null) \
      || die "openssl could not make the TLS certificate"
  fi
  openssl x509 -in "$TLS_DIR/cert.pem" -outform DER | sha256sum | cut -d' ' -f1 > "$TLS_DIR/cert.sha256"
  cat >> "$ETC/pr-processor.env" <<EOF
PR_PROCESSOR_TLS_CERT=$TLS_DIR/cert.pem
PR_PROCESSOR_TLS_KEY=$TLS_DIR/key.pem
EOF
fi
if [ "$DISPATCH" = sqs ]; then
  # Jobs come from the SQS queue (long poll), not over 8082; boto3 signs with the instance role in this region
  # (botocore reads AWS_DEFAULT_REGION, not AWS_REGION). AIPM_ASG_NAME empty: no scale-in protection.
  cat >> "$ETC/pr-processor.env" <<EOF
AIPM_DISPATCH=sqs
AIPM_JOB_QUEUE_URL=$JOB_QUEUE_URL
PR_SQS_WAIT_S=$SQS_WAIT_S
PR_SQS_VISIBILITY_S=$SQS_VISIBILITY_S
AIPM_ASG_NAME=$ASG_NAME
AWS_REGION=${AIPM_AWS_REGION:-}
AWS_DEFAULT_REGION=${AIPM_AWS_REGION:-}
EOF
fi
cat > "$ETC/secrets.conf" <<EOF
AWS_REGION=${AIPM_AWS_REGION:-}
AIPM_SHARED_SECRET_ARN=${AIPM_SHARED_SECRET_ARN:-}
AIPM_GITHUB_TOKEN_SECRET_ARN=${AIPM_GITHUB_TOKEN_SECRET_ARN:-}
AIPM_KIRO_API_KEY_SECRET_ARN=${AIPM_KIRO_API_KEY_SECRET_ARN:-}
AIPM_AGENT=$AGENT
AIPM_AGENT_KEY_SECRET_ARN=${AIPM_AGENT_KEY_SECRET_ARN:-}
AIPM_SECRETS_DIR=$SECRETS_DIR
EOF
chmod 0644 "$ETC"/*.env "$ETC/secrets.conf"

# The agent's user may not reach the instance metadata service (no role credentials for the agent).
cat > "$BIN/aipm-imds-block" <<EOF
#!/bin/sh
# Drop every packet from uid $AGENT_USER to the instance metadata service (IPv4 and, when present, IPv6). Idempotent.
set -e
iptables -C OUTPUT -m owner --uid-owner $AGENT_USER -d 169.254.169.254/32 -j DROP 2>/dev/null \\
  || iptables -I OUTPUT 1 -m owner --uid-owner $AGENT_USER -d 169.254.169.254/32 -j DROP
if command -v ip6tables >/dev/null 2>&1; then
  ip6tables -C OUTPUT -m owner --uid-owner $AGENT_USER -d fd00:ec2::254/128 -j DROP 2>/dev/null \\
    || ip6tables -I OUTPUT 1 -m owner --uid-owner $AGENT_USER -d fd00:ec2::254/128 -j DROP || true
fi
EOF
chmod 0755 "$BIN/aipm-imds-block"

# --- 5. systemd units -----------------------------------------------------------------------------------------------
cat > "$UNITS/aipm-secrets.service" <<EOF
[Unit]
Description=aipm-kiro: fetch the services' secrets from Secrets Manager into $SECRETS_DIR
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
EnvironmentFile=$ETC/secrets.conf
ExecStart=$VENV/bin/python $BIN/aipm-fetch-secrets
Restart=on-failure
RestartSec=15

[Install]
WantedBy=multi-user.target
EOF
if [ -n "$DATA_VOLUME_ID" ]; then
  cat > "$UNITS/aipm-data.service" <<EOF
[Unit]
Description=aipm-kiro: attach and mount the data volume $DATA_VOLUME_ID (state, the agent's sign-in)
Wants=network-online.target
After=network-online.target
Before=aipm-secrets.service aipm-worker-pool.service aipm-pr-processor.service

[Service]
Type=oneshot
RemainAfterExit=yes
EnvironmentFile=$ETC/data-volume.conf
ExecStart=$BIN/aipm-data-volume all

[Install]
WantedBy=multi-user.target
RequiredBy=aipm-worker-pool.service aipm-pr-processor.service
EOF
fi
cat > "$UNITS/aipm-imds-block.service" <<EOF
[Unit]
Description=aipm-kiro: block the agent user ($AGENT_USER) from the instance metadata service
Before=aipm-worker-pool.service aipm-pr-processor.service
After=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$BIN/aipm-imds-block

[Install]
WantedBy=multi-user.target
EOF
# One unit per service: the same shape; only the ordering, the module and the hardening differ.
service_unit() {  # name description module unit-lines service-lines
  cat > "$UNITS/aipm-$1.service" <<EOF
[Unit]
Description=aipm-kiro $2
Wants=network-online.target
$4
PartOf=aipm-secrets.service
StartLimitIntervalSec=0

[Service]
Type=simple
User=$SERVICE_USER
Group=$SERVICE_USER
UMask=0002
WorkingDirectory=$STATE
EnvironmentFile=$ETC/common.env
EnvironmentFile=$ETC/$1.env
EnvironmentFile=$SECRETS_DIR/$1.env
ExecStart=$VENV/bin/python -m $3
Restart=always
RestartSec=5
KillMode=mixed
TimeoutStopSec=30
StandardOutput=append:$LOGS/$1.log
StandardError=inherit
ProtectSystem=full
PrivateTmp=yes
$5

[Install]
WantedBy=multi-user.target
EOF
}
service_unit worker-pool "worker pool: kiro-cli sessions in pseudo-terminals (port $POOL_PORT)" ec2_services.worker_pool \
"After=network-online.target aipm-secrets.service aipm-imds-block.service
Requires=aipm-secrets.service aipm-imds-block.service
Before=aipm-pr-processor.service" \
"# Only what setpriv needs to start the agent as $AGENT_USER and what cancelling it needs; the agent gets none.
AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL
CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_KILL
NoNewPrivileges=yes"
service_unit pr-processor "PR processor: jobs, git worktrees, push, callbacks (port $PRP_PORT)" ec2_services.pr_processor \
"Wants=aipm-worker-pool.service
After=network-online.target aipm-secrets.service aipm-worker-pool.service
Requires=aipm-secrets.service" \
"CapabilityBoundingSet=
NoNewPrivileges=yes
ProtectHome=yes"

# --- 6. Log rotation, CloudWatch agent -----------------------------------------------------------------------------
mkdir -p "$PREFIX/etc/logrotate.d" "$(dirname "$CW_CONFIG")"
cat > "$PREFIX/etc/logrotate.d/aipm" <<EOF
$LOGS/*.log {
    daily
    rotate 7
    maxsize 100M
    compress
    missingok
    notifempty
    copytruncate
}
EOF
cat > "$CW_CONFIG" <<EOF
{
  "agent": {"run_as_user": "root", "logfile": "/opt/aws/amazon-cloudwatch-agent/logs/amazon-cloudwatch-agent.log"},
  "logs": {
    "logs_collected": {
      "files": {
        "collect_list": [
          {"file_path": "$LOGS/worker-pool.log", "log_group_name": "$LOG_GROUP_POOL",
           "log_stream_name": "{instance_id}", "timezone": "UTC"},
          {"file_path": "$LOGS/pr-processor.log", "log_group_name": "$LOG_GROUP_PRP",
           "log_stream_name": "{instance_id}", "timezone": "UTC"}
        ]
      }
    }
  }
}
EOF

# --- 7. Ownership and start (host only) -----------------------------------------------------------------------------
touch "$LOGS/worker-pool.log" "$LOGS/pr-processor.log"
chmod 0755 "$LOGS"
chmod 0644 "$LOGS"/*.log
if [ "$ON_HOST" = 1 ]; then
  # State: the services' own (job database, mirrors, the askpass script); the agent (group aipm) may not create,
  # rename or delete anything there. Workspaces: the agent works in them, group aipm, setgid keeps the group.
  # Not recursive: on a re-run (cfn-hup) the workspaces hold the agent's files, which must stay its own.
  chown "$SERVICE_USER:$SERVICE_USER" "$STATE"
  chown "$AGENT_USER:$SERVICE_USER" "$WORKSPACES"
  chmod u=rwx,g=rx,o=rx,g-s "$STATE"
  chmod 2775 "$WORKSPACES"
  chown -R "$AGENT_USER:$AGENT_USER" "$KIRO_HOME/.kiro"
  chmod 0700 "$PREFIX/run/aipm/secrets"
  if [ -n "$TLS_PARAMETER" ]; then
    chown -R "$SERVICE_USER:$SERVICE_USER" "$TLS_DIR"
    chmod 0700 "$TLS_DIR"
    aws ssm put-parameter --name "$TLS_PARAMETER" --type String --overwrite --value "$(cat "$TLS_DIR/cert.sha256")" \
      ${AIPM_AWS_REGION:+--region "$AIPM_AWS_REGION"} >/dev/null \
      || die "could not publish the certificate's fingerprint to $TLS_PARAMETER"
  fi
  "$BIN/aipm-imds-block"
  systemctl daemon-reload
  if [ -n "$DATA_VOLUME_ID" ]; then systemctl enable aipm-data.service; fi
  systemctl enable aipm-secrets.service aipm-imds-block.service aipm-worker-pool.service aipm-pr-processor.service
  systemctl restart aipm-secrets.service
  systemctl restart aipm-worker-pool.service
  systemctl restart aipm-pr-processor.service
  /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c "file:$CW_CONFIG" >&2
  # A failed start fails the install (and the deploy): wait for both /health answers.
  PRP_SCHEME=http
  [ -n "$TLS_PARAMETER" ] && PRP_SCHEME=https
  for url in "http://127.0.0.1:$POOL_PORT/health" "$PRP_SCHEME://127.0.0.1:$PRP_PORT/health"; do
    ok=0
    for _ in $(seq 1 60); do
      # -k: our own self-signed certificate, on loopback.
      if curl -kfsS -o /dev/null "$url"; then ok=1; break; fi
      sleep 2
    done
    [ "$ok" = 1 ] || die "$url did not answer within 120 s (journalctl -u aipm-worker-pool -u aipm-pr-processor)"
  done
fi
log "installed: units in $UNITS, config in $ETC, state in $STATE"
