#!/usr/bin/env bash
# The local stack: `make dev` and `make test` both come through here.
#   local/stack.sh dev                  emulator + resources + the platform on :$DOTMAC_PORT
#   local/stack.sh with-emulator CMD…   run CMD with a fresh emulator on a free port
#   local/stack.sh contract             schemathesis against the platform's served OpenAPI document
#   local/stack.sh venv                 install the Python tools (.venv)
#   local/stack.sh sam-venv             install SAM CLI (.venv-sam)
#   local/stack.sh stripe-venv          install Stripe's Python library (.venv-stripe, interop tests)
# DOTMAC_EMULATOR=external skips moto and uses the AWS_* variables as they are (LocalStack,
# DynamoDB Local via AWS_ENDPOINT_URL_DYNAMODB, or real AWS).
# DOTMAC_STRIPE_API_BASE set (say to https://api.stripe.com with a test-mode key) skips the
# local Stripe double (local/stripe_double.py) and uses Stripe as configured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
SAM_VENV="$ROOT/.venv-sam"
CONTRACT_VENV="$ROOT/.venv-contract"
STRIPE_VENV="$ROOT/.venv-stripe"
STATE="$ROOT/.local"
mkdir -p "$STATE"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs a requirements file into a venv once; re-installs when the file changes.
ensure_venv() {
  local venv=$1 requirements=$2
  if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/.installed-$(basename "$requirements")"; then
    return
  fi
  say "installing $(basename "$requirements") into $(basename "$venv") (first run only)"
  # Explicit failures: this also runs where `set -e` is suspended (a function called in `||`),
  # and a failed install must never leave the stamp that says it is done.
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || return 1
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" || return 1
  cp "$requirements" "$venv/.installed-$(basename "$requirements")"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_in_use() {
  python3 -c 'import socket, sys; s = socket.socket(); sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$1"
}

EMULATOR_PID=""
EMULATOR_LOG=""
stop_emulator() {
  if [ -n "$EMULATOR_PID" ] && kill -0 "$EMULATOR_PID" 2>/dev/null; then
    kill "$EMULATOR_PID" 2>/dev/null || true
    wait "$EMULATOR_PID" 2>/dev/null || true
  fi
  EMULATOR_PID=""
}

# Starts moto on $1 and exports the variables that point the SDK at it. local/moto_server.py is
# moto_server with DynamoDB's, Secrets Manager's and ECS's requests serialised (moto's backends race).
start_emulator() {
  local port=$1 log="$STATE/emulator-$1.log"
  ensure_venv "$VENV" local/requirements.txt
  say "starting the AWS emulator (moto) on 127.0.0.1:$port (log: ${log#$ROOT/})"
  "$VENV/bin/python" local/moto_server.py -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  EMULATOR_PID=$!
  EMULATOR_LOG=$log
  local exports
  if ! exports=$("$VENV/bin/python" local/emulator_setup.py "$port"); then
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
  eval "$exports"
}

STRIPE_DOUBLE_PID=""
stop_stripe_double() {
  if [ -n "$STRIPE_DOUBLE_PID" ] && kill -0 "$STRIPE_DOUBLE_PID" 2>/dev/null; then
    kill "$STRIPE_DOUBLE_PID" 2>/dev/null || true
    wait "$STRIPE_DOUBLE_PID" 2>/dev/null || true
  fi
  STRIPE_DOUBLE_PID=""
}

# Starts the local Stripe double on a free port (unless DOTMAC_STRIPE_API_BASE points at a
# Stripe already) and exports the three variables the platform reads. A secret key or webhook
# secret already set is the one the double and our endpoint both use. $1: where the double
# delivers webhooks for every key (the dev server's endpoint), or empty (tests register their
# own endpoints per key).
start_stripe_double() {
  local webhook_url=${1:-}
  if [ -n "${DOTMAC_STRIPE_API_BASE:-}" ]; then
    say "Stripe: using $DOTMAC_STRIPE_API_BASE (DOTMAC_STRIPE_API_BASE is set; no local double)"
    return 0
  fi
  export DOTMAC_STRIPE_SECRET_KEY="${DOTMAC_STRIPE_SECRET_KEY:-sk_test_dotmac_local_double}"
  export DOTMAC_STRIPE_WEBHOOK_SECRET="${DOTMAC_STRIPE_WEBHOOK_SECRET:-whsec_$(python3 -c 'import secrets; print(secrets.token_hex(24))')}"
  local port log
  port=$(free_port)
  log="$STATE/stripe-double-$port.log"
  say "starting the Stripe test double on 127.0.0.1:$port (log: ${log#$ROOT/})"
  python3 local/stripe_double.py --port "$port" --webhook-secret "$DOTMAC_STRIPE_WEBHOOK_SECRET" \
    ${webhook_url:+--webhook-url "$webhook_url"} >"$log" 2>&1 &
  STRIPE_DOUBLE_PID=$!
  export DOTMAC_STRIPE_API_BASE="http://127.0.0.1:$port"
  local tries=0
  until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=1)' "$DOTMAC_STRIPE_API_BASE" 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ] || ! kill -0 "$STRIPE_DOUBLE_PID" 2>/dev/null; then
      echo "the Stripe double did not start; its log:" >&2
      tail -n 20 "$log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
}

cmd_dev() {
  local port=${DOTMAC_PORT:-8000} pidfile="$STATE/dev.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cut -d' ' -f1 "$pidfile")" 2>/dev/null; then
    read -r running_pid running_port <"$pidfile"
    echo "make dev is already running (pid $running_pid) on http://127.0.0.1:$running_port — use it, or stop it with Ctrl-C in its terminal." >&2
    exit 1
  fi
  if port_in_use "$port"; then
    echo "port $port is already taken by another program: stop it or run DOTMAC_PORT=<port> make dev." >&2
    exit 1
  fi
  echo "$$ $port" >"$pidfile"
  APP_PID=""
  # Background jobs of a script ignore Ctrl-C, so the trap hands the platform a SIGTERM (its
  # graceful stop) and then stops the emulator.
  trap "stop_app; stop_emulator; stop_stripe_double; rm -f '$pidfile'" EXIT
  trap 'exit 0' INT TERM
  if [ "${DOTMAC_EMULATOR:-moto}" = "moto" ]; then
    local emulator_port=${DOTMAC_EMULATOR_PORT:-4566}
    if port_in_use "$emulator_port"; then
      echo "port $emulator_port (the emulator's) is taken: stop what uses it or set DOTMAC_EMULATOR_PORT." >&2
      exit 1
    fi
    start_emulator "$emulator_port"
  fi
  start_stripe_double "http://127.0.0.1:$port/v1/webhooks/stripe"
  say "building and starting the platform"
  export DOTMAC_STATE_DIR="${DOTMAC_STATE_DIR:-$STATE}"
  # A person follows an invitation's link from the terminal: the e-mail only reaches moto.
  export DOTMAC_INVITATION_PRINT_LINKS="${DOTMAC_INVITATION_PRINT_LINKS:-true}"
  cargo build --quiet -p dotmac-local
  "${CARGO_TARGET_DIR:-$ROOT/target}/debug/dotmac-local" &
  APP_PID=$!
  wait "$APP_PID"
}

stop_app() {
  if [ -n "${APP_PID:-}" ] && kill -0 "$APP_PID" 2>/dev/null; then
    kill -TERM "$APP_PID" 2>/dev/null || true
    wait "$APP_PID" 2>/dev/null || true
  fi
}

# werkzeug logs one line per request, `ADDR - - [DATE] "METHOD PATH HTTP/1.1" STATUS SIZE`, the
# quoted part wrapped in ANSI colours.
SERVER_ERROR_LINE='^[^ ]+ - - \[[^]]*\] ".*" 5[0-9][0-9] [^ ]+$'

# A 5xx from moto is a crash inside the emulator, never an answer AWS would give: a test passing
# over one proves nothing, so it fails the run.
check_emulator_log() {
  local count
  count=$(grep -cE "$SERVER_ERROR_LINE" "$EMULATOR_LOG" || true)
  if [ "$count" -eq 0 ]; then
    return 0
  fi
  echo "the emulator answered HTTP 5xx $count time(s); see ${EMULATOR_LOG#$ROOT/}:" >&2
  { grep -E "$SERVER_ERROR_LINE" "$EMULATOR_LOG" || true; } | head -n 20 | sed $'s/\e\\[[0-9;]*m//g' >&2
  # Request lines of concurrent requests interleave with the tracebacks, so the exceptions are
  # listed apart: a traceback follows "Error on request:" in one piece, up to the next log line,
  # and its last line names the exception.
  echo "the exceptions behind them (count, last line of the traceback):" >&2
  awk '
    /^Error on request:/ { if (last != "") print last; last = ""; inside = 1; next }
    inside && / - - \[/ { inside = 0 }
    inside && NF { last = $0 }
    !inside && last != "" { print last; last = "" }
    END { if (last != "") print last }
  ' "$EMULATOR_LOG" | sort | uniq -c | sort -rn | head -n 20 >&2
  return 1
}

cmd_with_emulator() {
  trap 'stop_emulator; stop_stripe_double' EXIT
  trap 'exit 130' INT TERM
  start_emulator "$(free_port)"
  start_stripe_double ""
  # The interop tests sign webhooks with Stripe's own Python library.
  ensure_venv "$STRIPE_VENV" local/requirements-stripe.txt
  local status=0
  "$@" || status=$?
  # The command's own failure wins; a clean run with 5xx in the log fails on them.
  if ! check_emulator_log && [ "$status" -eq 0 ]; then
    status=1
  fi
  exit "$status"
}

# The contract check (run inside `with-emulator`): the platform on a free port with its own
# resources, and schemathesis against the OpenAPI document it serves.
contract_run() {
  # `set -e` is suspended here (`with-emulator` calls this in `||`): each step says it failed.
  ensure_venv "$CONTRACT_VENV" local/requirements-contract.txt || return 1
  cargo build --quiet ${CARGO_FLAGS:-} -p dotmac-local || return 1
  local port log="$STATE/contract-server.log"
  port=$(free_port)
  say "contract check: the platform on 127.0.0.1:$port (log: ${log#$ROOT/})"
  DOTMAC_PORT=$port DOTMAC_PREFIX="contract$(date +%s)" DOTMAC_STATE_DIR= \
    DOTMAC_ADMIN_EMAIL=admin@contract.test DOTMAC_ADMIN_PASSWORD=contract-admin-password \
    "${CARGO_TARGET_DIR:-$ROOT/target}/debug/dotmac-local" >"$log" 2>&1 &
  APP_PID=$!
  local status=0
  "$CONTRACT_VENV/bin/python" local/contract_check.py "http://127.0.0.1:$port" \
    admin@contract.test contract-admin-password || status=$?
  if ! kill -0 "$APP_PID" 2>/dev/null; then
    echo "the platform stopped during the contract check; the end of its log:" >&2
    tail -n 30 "$log" >&2
    status=1
  fi
  stop_app
  return "$status"
}

case "${1:-}" in
  dev) cmd_dev ;;
  contract) cmd_with_emulator contract_run ;;
  with-emulator) shift; cmd_with_emulator "$@" ;;
  venv) ensure_venv "$VENV" local/requirements.txt ;;
  sam-venv) ensure_venv "$SAM_VENV" local/requirements-sam.txt ;;
  package-venv) ensure_venv "$VENV" local/requirements-package.txt ;;
  contract-venv) ensure_venv "$CONTRACT_VENV" local/requirements-contract.txt ;;
  stripe-venv) ensure_venv "$STRIPE_VENV" local/requirements-stripe.txt ;;
  *) echo "usage: local/stack.sh dev | with-emulator CMD… | contract | venv | sam-venv | package-venv | contract-venv | stripe-venv" >&2; exit 2 ;;
esac
