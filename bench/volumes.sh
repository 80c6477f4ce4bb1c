#!/usr/bin/env bash
# What a volume set costs (docs/benchmarks.md, "Volume sets"): pack into one
# tar and into volumes, import of the tar, of every volume in one run, and
# of one volume per run; against cp(1) of the same bytes, synced, as the
# disk's own speed. Each pair runs alternately, RUNS times, after a sync and
# with the page cache dropped, so that shared load falls on both alike.
#
#   bench/volumes.sh [BIG_MIB] [RUNS]
#
# The closure is one path of BIG_MIB MiB of random bytes (incompressible:
# what zstd cannot shrink, the volumes must carry) and 200 small ones, added
# to an isolated Nix store under /var/tmp. Volumes are a quarter of the
# bundle, so the big path spans several. Needs root (drop_caches).
set -euo pipefail
cd "$(dirname "$0")/.."
big=${1:-512}
runs=${2:-3}
work=/var/tmp/nix-airgap-volumes-bench
export PATH="/usr/local/go/bin:$PATH"
rm -rf "$work"
mkdir -p "$work"/{store,var/nix,var/log,etc,home,tmp,files}
trap 'rm -rf "$work"' EXIT
go build -o "$work/nix-airgap" ./cmd/nix-airgap
export NIX_STORE_DIR=$work/store NIX_STATE_DIR=$work/var/nix NIX_LOG_DIR=$work/var/log \
	NIX_CONF_DIR=$work/etc HOME=$work/home TMPDIR=$work/tmp NIX_REMOTE= NIX_PATH=
printf 'sandbox = false\nbuild-users-group =\nsubstituters =\n' >"$work/etc/nix.conf"
na=$work/nix-airgap
"$na" keygen --name bench-1 --secret-key "$work/k.sec" --public-key "$work/k.pub"

head -c "$((big << 20))" /dev/urandom >"$work/files/big"
paths=("$(nix-store --add "$work/files/big")")
for i in $(seq 200); do
	head -c $((RANDOM * 4)) /dev/urandom >"$work/files/small-$i"
	paths+=("$(nix-store --add "$work/files/small-$i")")
done
bytes=$(du -cb "$work"/files/* | tail -1 | cut -f1)
volsize=$((bytes / 4 + (1 << 20)))
echo "closure: ${#paths[@]} paths, $((bytes >> 20)) MiB; volumes of $((volsize >> 20)) MiB"

t() { # seconds a command takes, after a sync and with a cold page cache
	sync
	echo 3 >/proc/sys/vm/drop_caches
	local s e
	s=$(date +%s.%N)
	"$@" >/dev/null 2>&1
	sync
	e=$(date +%s.%N)
	echo "$e - $s" | bc
}
pack() { "$na" pack "${paths[@]}" --mode runtime --no-build --no-progress --secret-key "$work/k.sec" "$@"; }
imp() { "$na" import "$@" --public-key "$work/k.pub" --no-progress; }
imp1() { # one volume per run
	local c=$1
	shift
	for v in "$@"; do imp "$v" --cache "$c"; done
}
declare -A sum
add() { sum[$1]=$(echo "${sum[$1]:-0} + $2" | bc); }
for r in $(seq "$runs"); do
	rm -rf "$work"/out && mkdir "$work"/out
	add cp "$(t cp -r "$work/files" "$work/out/copy")"
	if [ $((r % 2)) -eq 1 ]; then
		add pack-tar "$(t pack --out "$work/out/b.tar")"
		add pack-volumes "$(t pack --out "$work/out/v.tar" --volume-size "$volsize")"
	else
		add pack-volumes "$(t pack --out "$work/out/v.tar" --volume-size "$volsize")"
		add pack-tar "$(t pack --out "$work/out/b.tar")"
	fi
	vols=("$work"/out/v.[0-9]*.tar)
	add import-tar "$(t imp "$work/out/b.tar" --cache "$work/out/c1")"
	add import-volumes "$(t imp "${vols[@]}" --cache "$work/out/c2")"
	add import-one-per-run "$(t imp1 "$work/out/c3" "${vols[@]}")"
done
echo "${#vols[@]} volumes; mean of $runs runs, seconds (MiB/s of the closure):"
for k in cp pack-tar pack-volumes import-tar import-volumes import-one-per-run; do
	m=$(echo "scale=2; ${sum[$k]} / $runs" | bc)
	echo "  $k: $m s ($(echo "scale=0; $bytes / 1048576 / $m" | bc) MiB/s)"
done
