#!/usr/bin/env bash
# Runs nix-airgap's whole test suite: go vet and staticcheck on both modules
# (the tool and bench/), unit tests and fuzz seed corpora under the race
# detector, the real-Nix integration tests under this machine's Nix, then
# again under each Nix of the matrix (scripts/nix-matrix.sh: Debian trixie's 2.26
# and sid's 2.34, in chroots that setup.sh makes and caches). Needs root
# (or sudo) for network namespaces and the chroots.
#
#   scripts/test.sh                      # everything (what CI runs)
#   scripts/test.sh -run REGEX PKG...    # these tests, under every Nix
set -euo pipefail
cd "$(dirname "$0")/.."
# The last line setup prints is the weed binary the S3 tests start.
NIX_AIRGAP_WEED=$(bash scripts/setup.sh --nix-matrix --seaweedfs | tail -n 1)
export NIX_AIRGAP_WEED
export PATH="/usr/local/go/bin:$PATH"

args=("$@")
if [ "${#args[@]}" -eq 0 ]; then
	go vet ./...
	# staticcheck, pinned; go run fetches it through the Go module proxy.
	staticcheck=honnef.co/go/tools/cmd/staticcheck@v0.8.2
	go run "$staticcheck" ./...
	(cd bench && go vet ./... && go run "$staticcheck" ./...)
	args=(./...)
fi
record=$(mktemp)
results=$(mktemp)
trap 'rm -f "$record" "$results"' EXIT

# The unit tests run once, under the race detector, where the real-Nix
# tests skip (NIXTEST_SKIP) and NIXTEST_RECORD notes them; those run
# without it, under this machine's Nix, then under each chroot's.
status=0
units=ok
result=ok
NIXTEST_SKIP=1 NIXTEST_RECORD=$record go test -race -count=1 -timeout 45m "${args[@]}" || units=FAIL status=1
bash scripts/nix-matrix.sh --plan "$record" |
	xargs -r -L 1 -P "$(nproc)" sh -c 'go test -count=1 -timeout 45m -run "$2" "./$1"' sh || result=FAIL status=1
echo "$(nix --version)|this machine|$result" >"$results"
bash scripts/nix-matrix.sh "$record" "$results" || status=1

echo
echo "Unit tests, under the race detector: $units"
echo "Nix versions the real-Nix tests ran under:"
awk -F'|' '{ printf "  %-20s %-24s %s\n", $1, $2, $3 }' "$results"
exit "$status"
