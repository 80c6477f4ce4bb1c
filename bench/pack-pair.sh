#!/usr/bin/env bash
# Times `nix-airgap pack` (zstd, from the local store) of a closure that
# bench/run.sh generated, for each BINARY[:GOMEMLIMIT] given, in
# alternating runs so that shared load affects each alike. Each run starts
# from a synced, empty output on a warm page cache (the store is read once
# first), as the pack section of bench/run.sh does. Prints wall seconds and
# peak RSS per run.
#
#   bench/pack-pair.sh [-runs R] WORK BINARY[:GOMEMLIMIT]...
#
# WORK is a bench/run.sh work dir, such as /var/tmp/nix-airgap-bench/small.
set -euo pipefail
runs=5
if [ "${1:-}" = -runs ]; then runs=$2; shift 2; fi
[ $# -ge 2 ] || { echo "usage: $0 [-runs R] WORK BINARY[:GOMEMLIMIT]..." >&2; exit 2; }
work=$1; shift
nix=$work/nix
export NIX_STORE_DIR=$work/store NIX_STATE_DIR=$nix/var/nix NIX_LOG_DIR=$nix/var/log/nix \
	NIX_CONF_DIR=$nix/etc HOME=$nix/home TMPDIR=$nix/tmp NIX_REMOTE= NIX_PATH= NIX_USER_CONF_FILES=
top=$(sed -n 's/^  "top": "\(.*\)",$/\1/p' "$work/closure.json")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
find "$work/store" -type f -exec cat {} + >/dev/null
printf '%-3s %-40s %-10s %8s %10s\n' run binary GOMEMLIMIT seconds 'peak RSS'
for run in $(seq "$runs"); do
	for spec in "$@"; do
		bin=${spec%%:*} lim=
		[ "$spec" = "$bin" ] || lim=${spec#*:}
		rm -rf "$out/b"
		sync
		# --key, not --secret-key: binaries from before the rename take only it.
		/usr/bin/time -f '%e %M' -o "$out/time" env ${lim:+GOMEMLIMIT=$lim} "$bin" pack "$top" --mode runtime --no-build \
			--out "$out/b" --key "$work/key.sec" --no-progress --log-level warn 2>"$out/err" || { cat "$out/err" >&2; exit 1; }
		read -r secs kb <"$out/time"
		printf '%-3s %-40s %-10s %8s %6d MiB\n' "$run" "$bin" "${lim:-default}" "$secs" $((kb / 1024))
	done
done
