#!/usr/bin/env bash
# Runs nix-airgap's whole test suite: go vet and staticcheck on both modules
# (the tool and bench/), unit tests, fuzz seed corpora and the real-Nix
# integration tests. Needs root (or sudo) for network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="/usr/local/go/bin:$PATH"
go vet ./...
# staticcheck, pinned; go run fetches it through the Go module proxy.
staticcheck=honnef.co/go/tools/cmd/staticcheck@v0.8.2
go run "$staticcheck" ./...
(cd bench && go vet ./... && go run "$staticcheck" ./...)
go test -count=1 -timeout 45m ./...
