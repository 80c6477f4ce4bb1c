#!/usr/bin/env bash
# The binary-delta benchmark of docs/benchmarks.md ("Binary deltas"):
# downloads the same Debian packages from bookworm and from trixie (the
# trixie lists in a private apt dir: the system's sources stay as they
# are), then has nix-airgap-bench build the closures from their files,
# pack and import the two updates with and without binary deltas, and
# rewrite docs/benchmarks.md.
#
#   bench/bindelta.sh [-- BENCH-FLAGS]      e.g. -- -runs 3
#
# -bindelta-methods=false skips the comparison of delta methods (about
# 30 minutes, sizes that do not change with the machine's load) and keeps
# the last published one.
#
# Needs root (apt-get, dpkg-deb) and Nix; about 500 MB of downloads once,
# kept in /var/tmp/nix-airgap-bench/debs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" != -- ] || shift
debs=/var/tmp/nix-airgap-bench/debs
apt=$debs/apt
# Packages of real binaries (tools, servers, compilers, libraries) that
# both suites have under the same name, each under 50 MB installed:
# 79 packages, about 820 MB installed in bookworm.
pkgs=(
	ansible-core apache2-bin bash bind9 borgbackup btrfs-progs buildah busybox
	ceph-common cmake coreutils cpp-12 crun cryptsetup-bin curl dnsmasq-base
	dovecot-core duplicity e2fsprogs emacs-bin-common etcd-server
	exim4-daemon-light ffmpeg g++-12 gdb gh git glusterfs-server gnupg gpg
	haproxy htop influxdb iproute2 iptables kubernetes-client libvirt-daemon
	lua5.4 lvm2 mariadb-server-core mesa-vulkan-drivers mpv nftables nginx-core
	nmap openssh-client openssh-server openvpn perl-base podman postfix
	qemu-system-arm qemu-system-x86 qemu-utils redis-server restic rsync runc
	samba-libs skopeo sqlite3 squid strace syncthing systemd tar tcpdump tmux
	tshark unbound util-linux varnish vim virt-manager vlc-bin wget
	wireguard-tools xz-utils zstd
)
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/etc" "$debs/bookworm" "$debs/trixie"
cat >"$apt/etc/trixie.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
trixie=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$apt/etc" -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
if [ "$(ls "$debs/trixie" | wc -l)" -lt "${#pkgs[@]}" ]; then
	apt-get -qq update
	apt-get -qq "${trixie[@]}" update
	(cd "$debs/bookworm" && apt-get -qq download "${pkgs[@]}")
	(cd "$debs/trixie" && apt-get -qq "${trixie[@]}" download "${pkgs[@]}")
fi
bin=/var/tmp/nix-airgap-bench/bin
mkdir -p "$bin"
go build -o "$bin/nix-airgap" ./cmd/nix-airgap
(cd bench && go build -o "$bin/nix-airgap-bench" ./cmd/nix-airgap-bench)
command -v bsdiff >/dev/null || apt-get install -y -qq --no-install-recommends bsdiff >/dev/null || true
cd bench && exec "$bin/nix-airgap-bench" -bindelta "$debs" -nix-airgap "$bin/nix-airgap" -docs ../docs "$@"
