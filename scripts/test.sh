#!/usr/bin/env bash
# Runs nix-airgap's whole test suite: go vet and staticcheck on both modules
# (the tool and bench/), unit tests, fuzz seed corpora and the real-Nix
# integration tests under this machine's Nix, then the real-Nix tests again
# under each Nix of the matrix (scripts/nix-matrix.sh: Debian trixie's 2.26
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

# This machine's Nix runs everything, and NIXTEST_RECORD notes the tests
# that ran Nix; the matrix runs those again under each chroot's Nix.
status=0
result=ok
NIXTEST_RECORD=$record go test -count=1 -timeout 45m "${args[@]}" || result=FAIL status=1
echo "$(nix --version)|this machine|$result" >"$results"
bash scripts/nix-matrix.sh "$record" "$results" || status=1

echo
echo "Nix versions the real-Nix tests ran under:"
awk -F'|' '{ printf "  %-20s %-24s %s\n", $1, $2, $3 }' "$results"
exit "$status"
