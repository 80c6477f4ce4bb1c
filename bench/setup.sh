#!/usr/bin/env bash
# Installs what the benchmarks need from Debian when it is missing:
# nginx (the static-file baseline), wrk (the HTTP load generator) and
# GNU time. Nix itself (nix-bin) is the project's usual prerequisite.
set -euo pipefail
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/bin/time ] || need+=(time)
command -v nix >/dev/null || need+=(nix-bin)
if [ ${#need[@]} -gt 0 ]; then
	echo "bench/setup.sh: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# Debian starts nginx on install; the benchmark runs its own instance.
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	rm -f /usr/sbin/policy-rc.d
fi
