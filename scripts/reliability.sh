#!/usr/bin/env bash
# Runs nix-airgap's long reliability checks, the ones too slow for the
# normal test suite (docs/reliability.md gives what each proves and the
# figures of the last run). Every step is bounded in time; all network
# traffic stays on 127.0.0.1. Needs root (tmpfs mounts, network
# namespaces) and installs wrk when missing.
#
#   scripts/reliability.sh                 # everything, about 2.5 hours
#   STEPS="crash load" scripts/reliability.sh
#
# Knobs (environment):
#   STEPS          build crash media hostile load fuzz supply (default: all)
#   CRASH_ROUNDS   SIGKILL rounds per crash test (default 100)
#   CRASH_PATHS    store paths in the crash tests' bundle (default 200, the tests' own 50)
#   LOAD_DURATION  wrk run against serve, as 90s, 10m or 1h (default 10m)
#   LOAD_CONNS     wrk connections (default 64)
#   SLOW_CONNS     slowloris connections (default 1000 alone, 256 under load)
#   FUZZTIME       per fuzz target, two targets at a time (default 10m)
#   OUT            where logs and figures go (default $TMPDIR/nix-airgap-reliability)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

STEPS=${STEPS:-build crash media hostile load fuzz supply}
CRASH_ROUNDS=${CRASH_ROUNDS:-100}
CRASH_PATHS=${CRASH_PATHS:-200}
LOAD_DURATION=${LOAD_DURATION:-10m}
LOAD_CONNS=${LOAD_CONNS:-64}
SLOW_CONNS=${SLOW_CONNS:-}
FUZZTIME=${FUZZTIME:-10m}
OUT=${OUT:-${TMPDIR:-/tmp}/nix-airgap-reliability}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BIN="$OUT/nix-airgap"
failed=()

step() { echo "== $1 ($(date +%T))" >&2; }
want() { [[ " $STEPS " == *" $1 "* ]]; }

# The reproducible static build of the offline binary: the same bytes
# from two checkouts in different directories.
build() {
	step "build: reproducible static binary"
	local a b
	a=$(mktemp -d) b=$(mktemp -d)
	git archive HEAD | tar -x -C "$a"
	git archive HEAD | tar -x -C "$b"
	for d in "$a" "$b"; do
		(cd "$d" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w -buildid=' -o nix-airgap ./cmd/nix-airgap)
	done
	sha256sum "$a/nix-airgap" "$b/nix-airgap" | tee "$OUT/build.txt"
	file "$b/nix-airgap" | tee -a "$OUT/build.txt" || true
	ls -l "$b/nix-airgap" | tee -a "$OUT/build.txt"
	if ! cmp -s "$a/nix-airgap" "$b/nix-airgap"; then
		echo "build: two builds differ" >&2
		failed+=(build)
	fi
	cp "$b/nix-airgap" "$BIN"
	rm -rf "$a" "$b"
}

crash() {
	step "crash: $CRASH_ROUNDS SIGKILL rounds of import, volume-by-volume import, pack, gc and import --repair"
	NIX_AIRGAP_CRASH_ROUNDS=$CRASH_ROUNDS NIX_AIRGAP_CRASH_PATHS=$CRASH_PATHS \
		go test -count=1 -v -timeout 4h -run '^(TestImportCrash|TestVolumeImportCrash|TestPackCrash|TestGCCrash|TestRepairCrash)$' ./internal/reliability \
		2>&1 | tee "$OUT/crash.log" | grep -E '^(---|ok|FAIL|PASS)|rounds' || true
	grep -q '^ok' "$OUT/crash.log" || failed+=(crash)
}

media() {
	step "media: bad bundles and a full disk"
	{ go test -count=1 -v -timeout 30m -run '^(TestBadMedia|TestImportDiskFull)$' ./internal/reliability &&
		go test -count=1 -v -timeout 30m -run '^(TestBundleWithNix|TestFuzzSeedsVerify)$' ./internal/bundle; } \
		>"$OUT/media.log" 2>&1 || failed+=(media)
	grep -E '^(---|ok|FAIL)' "$OUT/media.log" | grep -v '^    ---' || true
}

hostile() {
	step "hostile: requests, auth, slowloris with ${SLOW_CONNS:-1000} connections"
	NIX_AIRGAP_SLOWLORIS_CONNS=${SLOW_CONNS:-1000} \
		go test -count=1 -v -timeout 10m -run '^(TestHostile.*|TestAuth.*|TestRange|TestSlowloris)$' ./internal/server \
		>"$OUT/hostile.log" 2>&1 || failed+=(hostile)
	grep -E '^(---|ok|FAIL)|slow connections' "$OUT/hostile.log" || true
}

load() {
	step "load: serve under wrk for $LOAD_DURATION"
	command -v wrk >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }
	[ -x "$BIN" ] || CGO_ENABLED=0 go build -trimpath -ldflags='-s -w -buildid=' -o "$BIN" ./cmd/nix-airgap
	local secs=${LOAD_DURATION%[smh]}
	case $LOAD_DURATION in
	*h) secs=$((secs * 3600)) ;;
	*m) secs=$((secs * 60)) ;;
	esac
	NIX_AIRGAP_BIN=$BIN NIX_AIRGAP_LOAD_DURATION=$LOAD_DURATION NIX_AIRGAP_LOAD_CONNS=$LOAD_CONNS \
		NIX_AIRGAP_SLOWLORIS_CONNS=${SLOW_CONNS:-256} NIX_AIRGAP_LOAD_REPORT="$OUT/load.txt" \
		go test -count=1 -v -timeout "$((secs + 1800))s" -run '^TestLoad$' ./internal/reliability \
		>"$OUT/load.log" 2>&1 || failed+=(load)
	sed -n '1,/^wrk output/p' "$OUT/load.txt" 2>/dev/null || tail -20 "$OUT/load.log"
}

# Every parser's fuzz target, two at a time with one worker each.
FUZZ_TARGETS=(
	internal/nar:FuzzReader internal/nar:FuzzRoundTrip
	internal/narinfo:FuzzParse internal/derivation:FuzzParse
	internal/bundle:FuzzParseManifest internal/bundle:FuzzVerifyTar
	internal/server:FuzzMirrorPath internal/server:FuzzParseCredentials
	internal/storepath:FuzzParse internal/storepath:FuzzParseHash
	internal/signing:FuzzParse internal/cache:FuzzParseCacheInfo
	internal/nixcli:FuzzParsePathInfo internal/nixcli:FuzzParseDerivations
	internal/plan:FuzzReadPaths internal/bundle:FuzzScanTar
)
fuzz_one() {
	local pkg=${1%%:*} target=${1##*:}
	local log="$OUT/fuzz-$(basename "$pkg")-$target.log"
	# Temp dirs on a tmpfs: FuzzVerifyTar imports, with fsyncs. A short
	# minimization: the default minute per new input spends most of a
	# target's time shrinking 30 KiB tars.
	local tmp=${TMPDIR:-/tmp}
	[ -d /dev/shm ] && [ -w /dev/shm ] && tmp=/dev/shm
	if TMPDIR=$tmp go test -run='^$' -fuzz="^$target\$" -fuzztime="$FUZZTIME" -fuzzminimizetime=5s -parallel=1 -timeout=0 "./$pkg" >"$log" 2>&1; then
		echo "fuzz $pkg $target: $(grep -o 'execs: [0-9]*' "$log" | tail -1), no crash"
	else
		echo "fuzz $pkg $target: FAILED, see $log; the crasher is in $pkg/testdata/fuzz/$target/"
		return 1
	fi
}
fuzz() {
	step "fuzz: ${#FUZZ_TARGETS[@]} targets, $FUZZTIME each, two at a time"
	local i rc=0
	for ((i = 0; i < ${#FUZZ_TARGETS[@]}; i += 2)); do
		fuzz_one "${FUZZ_TARGETS[i]}" &
		local p1=$! p2=""
		if [ -n "${FUZZ_TARGETS[i+1]:-}" ]; then
			fuzz_one "${FUZZ_TARGETS[i+1]}" &
			p2=$!
		fi
		wait "$p1" || rc=1
		[ -z "$p2" ] || wait "$p2" || rc=1
	done | tee "$OUT/fuzz.txt"
	grep -q FAILED "$OUT/fuzz.txt" && failed+=(fuzz) || true
}

supply() {
	step "supply: dependencies and known vulnerabilities"
	[ -x "$BIN" ] || CGO_ENABLED=0 go build -trimpath -ldflags='-s -w -buildid=' -o "$BIN" ./cmd/nix-airgap
	{
		echo "# go version -m (what the offline binary links)"
		go version -m "$BIN"
		echo "# go list -m all (the module graph, tests included)"
		go list -m all
		echo "# go list -m -u all (newer versions)"
		go list -m -u all 2>&1 || true
	} >"$OUT/deps.txt"
	grep -E '^\s(dep|build)' "$OUT/deps.txt" | grep dep || true
	local gv
	gv=$(command -v govulncheck || echo "$(go env GOPATH)/bin/govulncheck")
	if [ ! -x "$gv" ]; then
		echo "govulncheck: not installed (go install golang.org/x/vuln/cmd/govulncheck@latest)"
		failed+=(supply)
		return
	fi
	# GOVULNDB=file:///DIR uses a database built offline (docs/reliability.md).
	local db=()
	[ -z "${GOVULNDB:-}" ] || db=(-db "$GOVULNDB")
	if "$gv" "${db[@]}" ./cmd/nix-airgap >"$OUT/govulncheck.txt" 2>&1 &&
		"$gv" "${db[@]}" -mode=binary "$BIN" >>"$OUT/govulncheck.txt" 2>&1; then
		echo "govulncheck: the offline binary is clean"
	else
		echo "govulncheck: failed or found something, see $OUT/govulncheck.txt"
		tail -5 "$OUT/govulncheck.txt"
		failed+=(supply)
	fi
	# The whole module, benchmarks included: for information.
	"$gv" "${db[@]}" ./... >"$OUT/govulncheck-all.txt" 2>&1 || echo "govulncheck ./...: see $OUT/govulncheck-all.txt"
}

for s in build crash media hostile load fuzz supply; do
	if want "$s"; then "$s"; fi
done

if [ "${#failed[@]}" -gt 0 ]; then
	echo "reliability: FAILED: ${failed[*]} (logs in $OUT)" >&2
	exit 1
fi
echo "reliability: all steps passed (logs in $OUT)" >&2
