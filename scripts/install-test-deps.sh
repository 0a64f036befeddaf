#!/usr/bin/env bash
# Installs what `make test` needs and a fresh machine lacks: the real Prometheus,
# promtool, Alertmanager and amtool, and VictoriaMetrics (victoria-metrics,
# vmagent, vmalert) from Debian's packages. Idempotent: it does
# nothing when the tools are already on PATH.
set -euo pipefail

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
command -v vmalert >/dev/null 2>&1 || need+=(victoria-metrics)

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
