#!/usr/bin/env bash
# Measures `nix-airgap plan` on a generated graph of N instantiated .drv
# files (as BenchmarkPlan in internal/plan, plus PAD bytes of environment
# per derivation, as real .drv files carry build scripts): peak RSS and
# wall time of each binary given, in alternating runs, with the Go
# runtime's default memory limit (GOMEMLIMIT=off) and with a soft limit.
# -check measures `nix-airgap check` of the same graph against an empty
# cache instead (it reads every .drv, and finds every path blocked).
#
#   bench/plan-memory.sh [-check] [-n N] [-pad BYTES] [-runs R] [-limit 160MiB] BINARY...
#
# Uses a throw-away Nix store under $TMPDIR; needs nix-instantiate.
set -euo pipefail
n=10000 pad=2000 runs=3 limit=160MiB cmd=plan
while [ $# -gt 0 ]; do
	case "$1" in
	-n) n=$2; shift 2 ;;
	-pad) pad=$2; shift 2 ;;
	-runs) runs=$2; shift 2 ;;
	-limit) limit=$2; shift 2 ;;
	-check) cmd=check; shift ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || { echo "usage: $0 [-check] [-n N] [-pad BYTES] [-runs R] [-limit L] BINARY..." >&2; exit 2; }
root=$(mktemp -d)
trap 'chmod -R u+w "$root"; rm -rf "$root"' EXIT
mkdir -p "$root"/{store,var/nix,var/log/nix,etc,home,tmp}
printf 'sandbox = false\nbuild-users-group =\nsubstituters =\nexperimental-features = nix-command flakes\n' >"$root/etc/nix.conf"
export NIX_STORE_DIR=$root/store NIX_STATE_DIR=$root/var/nix NIX_LOG_DIR=$root/var/log/nix \
	NIX_CONF_DIR=$root/etc HOME=$root/home TMPDIR=$root/tmp NIX_REMOTE= NIX_PATH= NIX_USER_CONF_FILES=
cat >"$root/graph.nix" <<'NIX'
{ n, pad }:
let
  script = builtins.concatStringsSep "" (builtins.genList (_: "x") pad);
  mk = i: derivation ({
    name = "d${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${toString i} > $out" ];
    inherit script;
    deps = if i == 0 then [ ] else [ (builtins.elemAt ds (i / 2)) (builtins.elemAt ds (i * 7 / 11)) ];
  } // (if builtins.div i 10 * 10 == i then {
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = builtins.hashString "sha256" "${toString i}\n";
  } else { }));
  ds = builtins.genList mk n;
in derivation {
  name = "top";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo > $out" ];
  deps = ds;
}
NIX
nix-instantiate "$root/graph.nix" --arg n "$n" --arg pad "$pad" >/dev/null 2>&1
mkdir "$root/empty"
echo "StoreDir: $root/store" >"$root/empty/nix-cache-info"
case $cmd in
plan) args=(--mode build --derivations --json) ;;
check) args=(--against "$root/empty") ;;
esac
echo "graph: $n derivations, $pad bytes of padding each; $(du -sh --apparent-size "$root/store" | cut -f1) of .drv files"
printf '%-40s %-10s %10s %8s\n' binary GOMEMLIMIT 'peak RSS' seconds
for run in $(seq "$runs"); do
	for bin in "$@"; do
		for lim in off "$limit"; do
			# check exits 6: every path is blocked. time then writes that
			# first, and its figures last.
			/usr/bin/time -f '%M %e' -o "$root/time" env GOMEMLIMIT="$lim" "$bin" "$cmd" \
				--file "$root/graph.nix" --arg n "$n" --arg pad "$pad" "${args[@]}" \
				--log-level warn >/dev/null || [ "$cmd-$?" = check-6 ]
			read -r kb secs < <(tail -n 1 "$root/time")
			printf '%-40s %-10s %7d MiB %8s\n' "$bin" "$lim" $((kb / 1024)) "$secs"
		done
	done
done
