#!/usr/bin/env bash
# Installs what `make test` needs and a fresh machine lacks: the real Prometheus,
# promtool, Alertmanager and amtool, VictoriaMetrics (victoria-metrics, vmagent,
# vmalert) and PostgreSQL (whose server binaries Debian keeps in
# /usr/lib/postgresql/<version>/bin) from Debian's packages, python3, node and
# npm (the webhook docs' snippets and the agent SDKs), the TypeScript SDK's
# pinned dev dependencies, and helm (built once with go install into
# $(go env GOPATH)/bin). Idempotent: it does nothing when the tools are
# already there.
set -euo pipefail

# DEPS=demo (`make demo`) installs only what the demo runs: Prometheus,
# Alertmanager and curl.
tests=1
if [ "${DEPS:-test}" = demo ]; then tests=0; fi

# helm for deploy/'s chart tests: built from source once (~2 minutes), then
# cached. The tests look for it on PATH and in $(go env GOPATH)/bin.
HELM_MODULE=helm.sh/helm/v3/cmd/helm@v3.22.0
gobin="$(go env GOPATH | cut -d: -f1)/bin"
if [ $tests = 1 ] && ! command -v helm >/dev/null 2>&1 && [ ! -x "${gobin}/helm" ]; then
  echo "install-test-deps: go install ${HELM_MODULE}" >&2
  go install "${HELM_MODULE}"
fi

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The tests start a throw-away cluster of their own with initdb and postgres.
if [ $tests = 1 ] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && ! command -v initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
if [ $tests = 1 ]; then
  command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
  command -v vmalert >/dev/null 2>&1 || need+=(victoria-metrics)
fi
# The webhook docs' Python and Node.js snippets run in a test (delivery/docs_test.go);
# the agent SDKs' tests (sdk/) need Python ≥ 3.9, Node ≥ 18 and npm.
if [ $tests = 1 ]; then
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
fi

# The TypeScript SDK's dev dependencies (the compiler and Node's types),
# exactly as pinned in its lockfile.
sdk_ts_deps() {
  local dir
  [ $tests = 1 ] || return 0
  dir="$(cd "$(dirname "$0")/.." && pwd)/sdk/typescript"
  if [ ! -d "$dir/node_modules" ] && command -v npm >/dev/null 2>&1; then
    echo "install-test-deps: npm ci in sdk/typescript" >&2
    (cd "$dir" && npm ci --no-audit --no-fund >/dev/null)
  fi
}

if [ ${#need[@]} -eq 0 ]; then
  sdk_ts_deps
  exit 0
fi

# Deduplicate while keeping order.
pkgs=$(printf '%s\n' "${need[@]}" | awk '!seen[$0]++' | tr '\n' ' ')
echo "install-test-deps: installing ${pkgs}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends keeps the install small; the packages' services are
# not started by the tests (they run the binaries directly on loopback).
$sudo apt-get install -y -qq --no-install-recommends ${pkgs} >/dev/null
sdk_ts_deps
