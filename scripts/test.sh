#!/usr/bin/env bash
# Runs nix-airgap's whole test suite: unit tests, fuzz seed corpora and the
# real-Nix integration tests. Needs root (or sudo) for network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="/usr/local/go/bin:$PATH"
go vet ./...
go test -count=1 -timeout 45m ./...
