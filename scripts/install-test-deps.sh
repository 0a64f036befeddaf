#!/usr/bin/env bash
# Installs what `make test` needs and a fresh machine lacks: the real Prometheus,
# promtool, Alertmanager and amtool from Debian's packages, and helm (built
# once with go install into $(go env GOPATH)/bin). Idempotent: it does
# nothing when the tools are already there.
set -euo pipefail

# helm for deploy/'s chart tests: built from source once (~2 minutes), then
# cached. The tests look for it on PATH and in $(go env GOPATH)/bin.
HELM_MODULE=helm.sh/helm/v3/cmd/helm@v3.22.0
gobin="$(go env GOPATH | cut -d: -f1)/bin"
if ! command -v helm >/dev/null 2>&1 && [ ! -x "${gobin}/helm" ]; then
  echo "install-test-deps: go install ${HELM_MODULE}" >&2
  go install "${HELM_MODULE}"
fi

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
# The webhook docs' Python and Node.js snippets run in a test (delivery/docs_test.go).
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v node >/dev/null 2>&1 || need+=(nodejs)

if [ ${#need[@]} -eq 0 ]; then
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
