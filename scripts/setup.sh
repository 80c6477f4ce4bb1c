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
command -v unzip >/dev/null 2>&1 || need+=(unzip)

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

# Go: at least the version go.mod names, in /usr/local/go (where the
# scripts look first): the official toolchain from the Go module proxy (the
# zip the go command itself fetches with GOTOOLCHAIN), since distributions
# lag behind.
root=$(cd "$(dirname "$0")/.." && pwd)
want=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$root/go.mod")
have_go() {
	local v
	v=$("$1" env GOVERSION 2>/dev/null) || return 1
	v=${v#go}
	[ "$(printf '%s\n%s\n' "$want" "$v" | sort -V | head -n1)" = "$want" ]
}
if ! have_go /usr/local/go/bin/go; then
	proxy=${GOPROXY:-https://proxy.golang.org}
	proxy=${proxy%%,*}
	case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
	zip="v0.0.1-go$want.linux-$arch.zip"
	echo "setup: installing Go $want into /usr/local/go from $proxy" >&2
	tmp=$(mktemp -d)
	curl -fsSL -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/$zip"
	unzip -q "$tmp/go.zip" -d "$tmp"
	chmod -R a+rX "$tmp"/golang.org/toolchain@*
	chmod a+x "$tmp"/golang.org/toolchain@*/bin/* "$tmp"/golang.org/toolchain@*/pkg/tool/*/*
	$sudo rm -rf /usr/local/go
	$sudo mv "$tmp"/golang.org/toolchain@* /usr/local/go
	rm -rf "$tmp"
fi
