#!/usr/bin/env bash
# Measures `nix-airgap plan` (and, with -pack, `pack` and `import` of the
# bundle into a fresh cache directory) of a channel-sized set of store
# paths that only an upstream cache on loopback has: a synthetic cache of
# N small paths in 40 layers (bench/cmd/synth-upstream), served by the
# first BINARY. Prints wall time, paths per second, CPU time (user+sys)
# and peak RSS (GNU time) of each run; plan asks the machine's Nix which
# paths are valid, and none are. Several BINARYs take turns in each run, on
# the same cache, so that shared load affects each alike; -no-import packs
# without importing. A pack killed half-way and resumed, and serve of the
# imported cache, are TestChannel's (internal/reliability;
# NIX_AIRGAP_CHANNEL_PATHS=N).
#
#   bench/plan-channel.sh [-n 100000] [-runs 2] [-pack [-no-import]] BINARY...
set -euo pipefail
n=100000 runs=2 pack=false import=true
while [ $# -gt 0 ]; do
	case "$1" in
	-n) n=$2; shift 2 ;;
	-runs) runs=$2; shift 2 ;;
	-pack) pack=true; shift ;;
	-no-import) import=false; shift ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || { echo "usage: $0 [-n N] [-runs R] [-pack [-no-import]] BINARY..." >&2; exit 2; }
bins=()
for b in "$@"; do bins+=("$(realpath "$b")"); done
bin=${bins[0]}
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'kill "$serve" 2>/dev/null; rm -rf "$work"' EXIT
PATH=/usr/local/go/bin:$PATH go run ./cmd/synth-upstream "$work" "$n"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve "$work/cache" --listen "127.0.0.1:$port" --access-log=false --log-level error &
serve=$!
sleep 1
"$bin" keygen --name bench-1 --secret-key "$work/sk" --public-key "$work/pk"
args=(--paths-from "$work/store-paths" --mode runtime --substituter "http://127.0.0.1:$port" --public-key "$work/channel.pub" --no-build)
measure() {
	local what=$1 t rss u s
	shift
	/usr/bin/time -o "$work/time" -f '%e %M %U %S' "$b" "$@" >/dev/null 2>"$work/err" ||
		{ cat "$work/err" >&2; exit 1; }
	read -r t rss u s <"$work/time"
	echo "$what $n paths ($b): $t s, $(echo "$n / $t" | bc) paths/s, CPU $(echo "$u + $s" | bc) s, peak RSS $((rss / 1024)) MiB"
}
for r in $(seq "$runs"); do
	for b in "${bins[@]}"; do
		measure plan plan "${args[@]}"
		if $pack; then
			rm -rf "$work/bundle"
			measure pack pack "${args[@]}" --no-progress --secret-key "$work/sk" --out "$work/bundle"
			if $import; then
				rm -rf "$work/site-cache"
				measure import import "$work/bundle" --cache "$work/site-cache" --public-key "$work/pk" --no-progress
			fi
		fi
	done
done
