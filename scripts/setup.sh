#!/usr/bin/env bash
# Installs what nix-airgap's demo and tests need on Debian or Ubuntu:
# Nix (Debian's nix-bin), static busybox for the test world's builders,
# iproute2 and util-linux for network namespaces, git and xz for flakes
# and channel lists, strace for the test of the order of syncs
# (internal/synctrace), gcc for the race detector, and a Go toolchain.
# Safe to run again.
#
#   scripts/setup.sh               # what the demo and the tests need
#   scripts/setup.sh --nix-matrix  # and the Nix chroots of the test matrix
#   scripts/setup.sh --seaweedfs   # and SeaweedFS's weed, for the S3 tests
#
# With --nix-matrix it also makes a debootstrap chroot with Debian's stock
# nix-bin for each suite in NIX_AIRGAP_SUITES (default: trixie sid, that is
# Nix 2.26 and 2.34), cached in NIX_AIRGAP_CACHE (default
# /var/cache/nix-airgap) and shared by every checkout on the machine, and
# prints their directories on stdout, one a line.
#
# With --seaweedfs it builds SeaweedFS's `weed` (a real S3-compatible
# server the S3 tests start on loopback) from its Go module, about 7
# minutes on 2 cores, caches it in NIX_AIRGAP_CACHE likewise, and prints
# the binary's path on stdout (after the chroots' directories).
set -euo pipefail

matrix=false
seaweedfs=false
for arg in "$@"; do
	case "$arg" in
	--nix-matrix) matrix=true ;;
	--seaweedfs) seaweedfs=true ;;
	*) echo "setup: unknown argument $arg" >&2; exit 2 ;;
	esac
done

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
command -v strace >/dev/null 2>&1 || need+=(strace)
# cgo, for the race detector scripts/test.sh runs the unit tests under.
command -v gcc >/dev/null 2>&1 || need+=(gcc)
dpkg -s libc6-dev >/dev/null 2>&1 || need+=(libc6-dev)
if $matrix || $seaweedfs; then
	command -v flock >/dev/null 2>&1 || need+=(util-linux)
fi
if $matrix; then
	command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
fi

if [ "${#need[@]}" -gt 0 ]; then
	echo "setup: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The system's Nix configuration (/etc/nix/nix.conf) is left alone: the
# demo and the tests run Nix with a configuration of their own
# (internal/nixcli.IsolatedEnv), which turns off the sandbox only there.

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
# go_proxy GO... prints the Go module proxy this machine is configured
# with: GOPROXY, or else what the first of the Go toolchains given that
# runs says (go env reads GOENV and the toolchain's own go.env); of that
# list, the first entry that is a URL. It fails, saying what to do, when
# there is none.
go_proxy() {
	local proxies=${GOPROXY:-} go p
	if [ -z "$proxies" ]; then
		for go in "$@"; do
			if [ -x "$go" ] && proxies=$("$go" env GOPROXY 2>/dev/null) && [ -n "$proxies" ]; then
				break
			fi
		done
	fi
	for p in $(printf '%s' "$proxies" | tr ',|' '  '); do
		case "$p" in http://* | https://* | file://*)
			printf '%s\n' "${p%/}"
			return 0
			;;
		esac
	done
	echo "setup: Go $want is needed in /usr/local/go, and no Go module proxy is configured to fetch it from." >&2
	echo "setup: set GOPROXY to your Go module proxy's URL, as for go itself, or install Go $want there; then run this again." >&2
	return 1
}
if ! have_go /usr/local/go/bin/go; then
	proxy=$(go_proxy /usr/local/go/bin/go "$(command -v go 2>/dev/null || true)")
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

$matrix || $seaweedfs || exit 0
if [ -n "$sudo" ]; then
	# The chroots and weed are built, locked and cached as root.
	exec sudo env NIX_AIRGAP_CACHE="${NIX_AIRGAP_CACHE:-}" NIX_AIRGAP_SUITES="${NIX_AIRGAP_SUITES:-}" \
		NIX_AIRGAP_MIRROR="${NIX_AIRGAP_MIRROR:-}" GOPROXY="${GOPROXY:-}" bash "$0" "$@"
fi
cache=${NIX_AIRGAP_CACHE:-/var/cache/nix-airgap}
mkdir -p "$cache"

# The Nix chroots. Each is built in a temp dir next to the cache and
# renamed into place when complete, under a flock, so that concurrent
# setups build it once and a killed build never passes for a cache. The
# build runs in a mount namespace of its own: whatever debootstrap mounts
# vanishes with it, even when killed, so removing a dead build's dir can
# never descend into the host's /proc or /dev. RECIPE names the recipe:
# change it when the recipe changes, and the next setup builds anew.
RECIPE=1
mirror=${NIX_AIRGAP_MIRROR:-$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}
if $matrix; then
	exec 9>>"$cache/.lock"
	flock 9
	for suite in ${NIX_AIRGAP_SUITES:-trixie sid}; do
		dir="$cache/nix-$suite.$RECIPE"
		if [ -d "$dir" ]; then
			echo "$dir"
			continue
		fi
		for stale in "$cache/.build-nix-$suite".*; do
			[ -e "$stale" ] && rm -rf --one-file-system "$stale"
		done
		tmp=$(mktemp -d "$cache/.build-nix-$suite.XXXXXX")
		chmod 755 "$tmp"
		echo "setup: building a $suite chroot with its nix-bin in $dir (a few minutes, once)" >&2
		start=$(date +%s)
		# nix-bin goes in the second step: debootstrap cannot resolve its
		# perl-dbdabi virtual dependency. sid's Release may be past its
		# Valid-Until on a snapshot mirror.
		unshare --mount --propagation private -- bash -euo pipefail -c '
			suite=$1 root=$2 mirror=$3
			debootstrap --variant=minbase \
				--include=busybox-static,iproute2,git,xz-utils,procps,ca-certificates \
				"$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
			apt="apt-get -q -o Acquire::Check-Valid-Until=false"
			chroot "$root" $apt update >>"$root.log" 2>&1
			chroot "$root" env DEBIAN_FRONTEND=noninteractive $apt install -y --no-install-recommends nix-bin >>"$root.log" 2>&1 ||
				{ tail -n 30 "$root.log" >&2; exit 1; }
			chroot "$root" apt-get clean
			mount -t proc proc "$root/proc"
			chroot "$root" nix --version >"$root/nix-version"
		' setup "$suite" "$tmp" "$mirror" >&2
		rm -f "$tmp.log"
		mv -T "$tmp" "$dir"
		echo "setup: $suite chroot ready: $(cat "$dir/nix-version") ($(( $(date +%s) - start ))s)" >&2
		echo "$dir"
	done
	exec 9>&-
fi

$seaweedfs || exit 0
# SeaweedFS's weed, built from the Go module proxy: `go install` refuses
# the module (its go.mod has replace directives), so it is built as the
# main module from a writable copy. Same rules as the chroots: a temp dir
# renamed into place when complete, under a lock of its own (so that it
# and a chroot build can run side by side), a directory named by version.
export PATH="/usr/local/go/bin:$PATH"
weed_module=github.com/seaweedfs/seaweedfs
weed_version=v0.0.0-20261109003541-7506e5f91cd6 # SeaweedFS 4.53
dir="$cache/seaweedfs-$weed_version"
exec 8>>"$cache/.lock-seaweedfs"
flock 8
if [ ! -x "$dir/weed" ]; then
	for stale in "$cache/.build-seaweedfs".*; do
		[ -e "$stale" ] && rm -rf --one-file-system "$stale"
	done
	tmp=$(mktemp -d "$cache/.build-seaweedfs.XXXXXX")
	echo "setup: building SeaweedFS's weed $weed_version into $dir (about 7 minutes on 2 cores, once)" >&2
	start=$(date +%s)
	src=$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$weed_module@$weed_version" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || { echo "setup: go mod download $weed_module@$weed_version gave no source" >&2; exit 1; }
	cp -r "$src" "$tmp/src"
	chmod -R u+w "$tmp/src"
	(cd "$tmp/src" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp/weed" ./weed) >&2
	rm -rf "$tmp/src"
	chmod 755 "$tmp" "$tmp/weed"
	"$tmp/weed" version >"$tmp/version" 2>&1
	mv -T "$tmp" "$dir"
	echo "setup: weed ready: $(head -n 1 "$dir/version") ($(( $(date +%s) - start ))s)" >&2
fi
echo "$dir/weed"
