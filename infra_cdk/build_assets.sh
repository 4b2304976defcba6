#!/usr/bin/env bash
# Build the deployable assets of the CDK app without Docker (DECISIONS 17):
#
#   build/lambda/<function>/   cmk_api, provision, rotate, audit_schedule: our code + dependencies as Linux wheels
#                              for CPython 3.12 on arm64 (manylinux2014_aarch64). When a dependency
#                              has no aarch64 wheel the folder is built for x86_64 instead and gets a
#                              file ARCH containing "x86_64"; the CDK app then deploys that function
#                              on x86_64.
#   build/kmip-image/          the Docker build context of the KMIP server (kmip_fargate/Dockerfile,
#                              the openkcm package, pyproject.toml): only what the image needs, so
#                              that `cdk deploy` does not upload the whole working tree.
#
# Usage: infra_cdk/build_assets.sh [--only cmk_api|provision|rotate|audit_schedule|kmip] [--out DIR]
# Needs: the project venv (.venv, for pip and tomllib) and network access to PyPI.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
OUT="$REPO/build"
ONLY=""
PYTHON_VERSION="3.12"

while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# Requirements from pyproject.toml: the runtime dependencies for every function, plus the keystore
# connectors (from the "local" extra) for the functions that talk to L1 keystores.
requirements() {
  "$PY" - "$REPO/pyproject.toml" "$1" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
wanted = list(project["dependencies"])
if sys.argv[2] == "keystores":
    connectors = ("azure-keyvault-keys", "azure-identity", "google-cloud-kms", "python-pkcs11")
    wanted += [r for r in project["optional-dependencies"]["local"] if re.split(r"[\[<>=!~; ]", r)[0] in connectors]
print("\n".join(wanted))
EOF
}

copy_sources() {  # copy_sources <target> <dir>...
  local target="$1"; shift
  for dir in "$@"; do
    mkdir -p "$target/$dir"
    (cd "$REPO" && tar --exclude='__pycache__' --exclude='*.pyc' -cf - "$dir") | (cd "$target" && tar -xf -)
  done
}

build_function() {  # build_function <name> <requirements flavour>
  local name="$1" flavour="$2"
  local target="$OUT/lambda/$name"
  local reqs
  reqs="$(mktemp)"
  requirements "$flavour" > "$reqs"
  rm -rf "$target"
  mkdir -p "$target"
  echo "== $name: installing $(wc -l < "$reqs") requirements for manylinux2014_aarch64 / cp${PYTHON_VERSION/./}"
  if ! "$PY" -m pip install --quiet --disable-pip-version-check \
        --platform manylinux2014_aarch64 --implementation cp --python-version "$PYTHON_VERSION" \
        --only-binary=:all: --target "$target" -r "$reqs"; then
    echo "== $name: a dependency has no aarch64 wheel; building for x86_64 instead"
    rm -rf "$target"; mkdir -p "$target"
    "$PY" -m pip install --quiet --disable-pip-version-check \
        --platform manylinux2014_x86_64 --implementation cp --python-version "$PYTHON_VERSION" \
        --only-binary=:all: --target "$target" -r "$reqs"
    echo "x86_64" > "$target/ARCH"
  fi
  rm -f "$reqs"
  copy_sources "$target" openkcm functions
  echo "== $name: $(du -sh "$target" | cut -f1) in $target ($(cat "$target/ARCH" 2>/dev/null || echo arm64))"
}

build_kmip_context() {
  local target="$OUT/kmip-image"
  if [ ! -f "$REPO/kmip_fargate/Dockerfile" ]; then
    echo "kmip_fargate/Dockerfile does not exist yet" >&2; exit 1
  fi
  rm -rf "$target"; mkdir -p "$target"
  copy_sources "$target" openkcm kmip_fargate
  cp "$REPO/pyproject.toml" "$REPO/README.md" "$target/"
  echo "== kmip: Docker build context in $target ($(du -sh "$target" | cut -f1))"
}

case "$ONLY" in
  "") build_function cmk_api keystores; build_function provision core; build_function rotate keystores
      build_function audit_schedule core; build_kmip_context ;;
  cmk_api|rotate) build_function "$ONLY" keystores ;;
  provision|audit_schedule) build_function "$ONLY" core ;;
  kmip) build_kmip_context ;;
  *) echo "--only takes cmk_api, provision, rotate, audit_schedule or kmip" >&2; exit 2 ;;
esac
