#!/usr/bin/env bash
# Installs what OpenKCM needs on a fresh Debian machine, idempotently and quietly.
#   scripts/bootstrap.sh run    python package + local extras, web UI build
#   scripts/bootstrap.sh test   everything `run` needs plus test tools, SoftHSM2, Chromium, the CDK libraries
set -euo pipefail
mode=${1:-run}
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

log() { printf '[bootstrap] %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    log "please install: ${missing[*]} (needs root)"; return 1
  fi
  local SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pip_install() {
  # Re-install only when pyproject.toml or the requested extras changed.
  local extras=$1
  local stamp="$VENV/.openkcm-$extras.stamp"
  local want; want="$(sha256sum pyproject.toml | cut -c1-16)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  log "pip install -e .[$extras]"
  # pipefail: pip's exit status decides; the filter may print nothing (grep's 1 is not a failure)
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[$extras]" 2>&1 \
      | { grep -vE '^(WARNING: Location|\s*$)' >&2 || true; }; then
    log "pip install -e .[$extras] failed"; exit 1
  fi
  "$VENV/bin/python" -c "import openkcm" # fail loudly if the install did not work
  echo "$want" > "$stamp"
}

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }

case "$mode" in
  run)
    pip_install local
    ;;
  test)
    apt_install softhsm2 chromium chromium-driver fonts-liberation
    pip_install dev,cdk
    ;;
  *) log "unknown mode $mode"; exit 64 ;;
esac

if [ -f frontend/package.json ]; then
  if [ ! -d frontend/node_modules ] || [ frontend/package-lock.json -nt frontend/node_modules/.stamp ]; then
    log "npm ci (frontend)"
    (cd frontend && npm ci --no-audit --no-fund --loglevel=error >/dev/null && touch node_modules/.stamp)
  fi
  if [ ! -f frontend/dist/index.html ] || [ -n "$(find frontend/src frontend/index.html -newer frontend/dist/index.html 2>/dev/null | head -1)" ]; then
    log "building the web UI"
    (cd frontend && npm run --silent build >/dev/null)
  fi
fi
