#!/usr/bin/env bash
# Packs the binary-delta benchmark's two updates --since its base with an
# OLD and a NEW nix-airgap in alternating runs, plain and with deltas,
# on the work dir bench/bindelta.sh left, and prints one line a run:
#
#   SCENARIO ROUND BINARY DELTAS WALL USER SYS MAXRSS-KiB LOAD1 NAR-DIR-BYTES
#
#   bench/bindelta-pack-ab.sh OLD NEW [ROUNDS]
#
# The closures' store paths are read from docs/bench/bindelta.json;
# compare the user+sys ratios when the machine is shared.
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
cd "$(dirname "$0")/.."
W=/var/tmp/nix-airgap-bench/bindelta
R=$W/nix
export NIX_STORE_DIR=$W/store NIX_STATE_DIR=$R/var/nix NIX_LOG_DIR=$R/var/log/nix NIX_CONF_DIR=$R/etc \
	HOME=$R/home XDG_CACHE_HOME=$R/home/.cache XDG_CONFIG_HOME=$R/home/.config XDG_DATA_HOME=$R/home/.local/share \
	XDG_STATE_HOME=$R/home/.local/state TMPDIR=$R/tmp NIX_REMOTE= NIX_PATH= NIX_USER_CONF_FILES= LANG=C.UTF-8
out=$(mktemp -d /var/tmp/nix-airgap-ab.XXXXXX)
trap 'rm -rf "$out"' EXIT
python3 -c 'import json,sys
for s in json.load(open(sys.argv[1]))["scenarios"]:
    print(s["name"].replace(" ", "-"), s["packDelta"]["command"].split()[1])' docs/bench/bindelta.json |
	while read -r name top; do
		for r in $(seq "$rounds"); do
			for bin in "$old" "$new"; do
				for d in false true; do
					rm -rf "$out/b"
					sync
					load=$(cut -d' ' -f1 /proc/loadavg)
					/usr/bin/time -o "$out/time" -f "%e %U %S %M" "$bin" pack "$top" --mode runtime --no-build \
						--since $W/base --out "$out/b" --secret-key $W/key.sec --no-progress --binary-deltas=$d >/dev/null 2>"$out/err" ||
						{ cat "$out/err" >&2; exit 1; }
					echo "$name $r $bin $d $(cat "$out/time") $load $(du -sb --apparent-size "$out/b/nar" | cut -f1)"
				done
			done
		done
	done
