#!/usr/bin/env bash
# Installs what nix-airgap's demo and tests need on Debian or Ubuntu:
# Nix (Debian's nix-bin), static busybox for the test world's builders,
# iproute2 and util-linux for network namespaces, git and xz for flakes
# and channel lists, and a Go toolchain. Safe to run again.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

need=()
command -v nix-build >/dev/null 2>&1 || need+=(nix-bin)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v git >/dev/null 2>&1 || need+=(git)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	# Debian's Go is older than go.mod asks for; the go command then
	# fetches the right toolchain through the module proxy (GOTOOLCHAIN=auto).
	need+=(golang-go)
fi

if [ "${#need[@]}" -gt 0 ]; then
	echo "setup: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Single-user Nix as root needs these; nix-airgap's own tests set them in
# their hermetic stores, and this covers the demo and interactive use.
if [ -w /etc ] || [ -n "$sudo" ]; then
	$sudo mkdir -p /etc/nix
	if ! grep -qs '^sandbox' /etc/nix/nix.conf; then
		printf 'sandbox = false\nbuild-users-group =\nexperimental-features = nix-command flakes\n' | $sudo tee -a /etc/nix/nix.conf >/dev/null
	fi
fi
