#!/usr/bin/env bash
# Runs every benchmark of docs/benchmarks.md and rewrites it with its plots.
#
#   bench/run.sh [SIZE...] [-- BENCH-FLAGS]
#
# SIZE is tiny (a 16 MiB smoke test of the harness), small (the default;
# ~256 MiB), medium (~2 GiB with a
# 1 GiB path) or large (~6 GiB). Flags after -- go to nix-airgap-bench
# (see `cd bench && go run ./cmd/nix-airgap-bench -h`), e.g. -- -runs 3 or
# -- -only serve. `bench/run.sh --report-only` redraws the page from
# docs/bench/results-*.json. Needs root (apt-get, drop_caches).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=()
flags=()
while [ $# -gt 0 ]; do
	case "$1" in
	--report-only) cd bench && exec go run ./cmd/nix-airgap-bench -report-only -docs ../docs ;;
	--size) sizes+=("$2"); shift 2 ;;
	--size=*) sizes+=("${1#--size=}"); shift ;;
	--) shift; flags=("$@"); break ;;
	*) sizes+=("$1"); shift ;;
	esac
done
[ ${#sizes[@]} -gt 0 ] || sizes=(small)
bench/setup.sh
bin=/var/tmp/nix-airgap-bench/bin
mkdir -p "$bin"
go build -o "$bin/nix-airgap" ./cmd/nix-airgap
# bench/ is a module of its own, so that its plotting library stays out
# of the tool's dependencies.
(cd bench && go build -o "$bin/nix-airgap-bench" ./cmd/nix-airgap-bench)
for size in "${sizes[@]}"; do
	"$bin/nix-airgap-bench" -size "$size" -nix-airgap "$bin/nix-airgap" "${flags[@]}"
done
