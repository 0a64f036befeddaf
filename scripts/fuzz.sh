#!/usr/bin/env bash
# Runs every Go fuzz target of the module for FUZZTIME each (default 30s),
# one after the other, and prints the executions of each. New failing
# inputs land in the package's testdata/fuzz/<Target>/ and then run with
# every `go test` as regression seeds: commit them with the fix.
#
#   FUZZTIME=5m scripts/fuzz.sh            # every target
#   FUZZTIME=1m scripts/fuzz.sh ./config   # the targets of some packages
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	mapfile -t pkgs < <($GO list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.Dir}}{{end}}' ./... | sed "s#^$PWD#.#")
fi
status=0
for pkg in "${pkgs[@]}"; do
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$pkg"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "== $pkg $target ($FUZZTIME)"
		# The last progress line holds the executions; a failure shows whole.
		if out=$($GO test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1); then
			grep 'execs:' <<<"$out" | tail -1 || true
		else
			echo "$out"
			status=1
		fi
	done
done
exit $status
