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
# Stamp the commit into the binary (nix-airgap --version, and every
# bundle's manifest): Go's own VCS stamp (-buildvcs) misses git worktrees
# and GOFLAGS may turn it off, so name the commit ourselves too. Outside
# a git checkout the binary says that it records no commit.
ldflags=""
if commit=$(git rev-parse HEAD 2>/dev/null); then
	git diff --quiet HEAD 2>/dev/null || commit="$commit-dirty"
	ldflags="-X github.com/nix-airgap/nix-airgap/internal/cli.releaseCommit=$commit"
fi
CGO_ENABLED=0 go build -trimpath -buildvcs=true -ldflags "$ldflags" -o bin/nix-airgap ./cmd/nix-airgap
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
	exec sudo bin/nix-airgap demo "$@"
fi
exec bin/nix-airgap demo "$@"
