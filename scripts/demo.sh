#!/usr/bin/env bash
# Runs `nix-airgap demo`: the whole airgap story on a built-in example with
# stock Nix, installing what is missing first. Run as root (or with sudo)
# for the offline steps' network namespace; without it the demo says so
# and runs them without isolation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="/usr/local/go/bin:$PATH"
mkdir -p bin
CGO_ENABLED=0 go build -trimpath -o bin/nix-airgap ./cmd/nix-airgap
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
	exec sudo bin/nix-airgap demo "$@"
fi
exec bin/nix-airgap demo "$@"
