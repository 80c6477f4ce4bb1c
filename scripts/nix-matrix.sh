#!/usr/bin/env bash
# Runs nix-airgap's real-Nix tests under the stock Nix of each chroot that
# `scripts/setup.sh --nix-matrix` makes (Debian trixie's nix-bin 2.26 and
# sid's 2.34). scripts/test.sh runs it after the main run:
#
#   scripts/nix-matrix.sh RECORD [RESULTS]
#   scripts/nix-matrix.sh --plan RECORD   # the tests RECORD names, by package
#
# RECORD is a file that a `go test` run with NIXTEST_RECORD=RECORD filled:
# internal/nixtest writes "PACKAGE TEST" there for every test that ran
# real Nix, so the chroots run exactly those tests and no unit test. Each
# chroot's outcome is appended to RESULTS as "VERSION|WHERE|ok" (or FAIL),
# or printed when RESULTS is not given. It exits 1 if any test failed.
#
# Each package's test binary is built static (CGO_ENABLED=0) and run inside
# the chroot with only the chroot's programs on PATH: its nix, nix-store,
# busybox, unshare. In a private mount namespace, the chroot is the lower
# layer of an overlay whose upper layer is a temp dir (the tests write
# where they like; the cache stays as it is), with the checkout read-only
# on /mnt, the host's /dev and a /proc; it all vanishes when the test
# binary exits. NIX_MATRIX=1 tells the tests where they are: one that needs
# a tool of the host the chroots lack (strace, go) skips there, where CI
# would make it fail.
#
# Environment: NIX_AIRGAP_CACHE and NIX_AIRGAP_SUITES as for setup.sh;
# NIX_AIRGAP_WEED, the weed binary the S3 tests start, mounted into each chroot;
# NIX_MATRIX_JOBS test binaries at a time (default: the number of CPUs);
# NIX_AIRGAP_CHANNEL_PATHS, the size of TestChannel's channel in the chroots
# (default 2,000: the 20,000 of CI's scale run once, under this machine's Nix).
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/.."

# plan RECORD prints the tests to run, a line per package:
# "PACKAGE ^(TestA|TestB)$". scripts/test.sh runs them on this machine too.
plan() {
	sort -u "$1" | awk '
		{ tests[$1] = (tests[$1] == "" ? "" : tests[$1] "|") $2 }
		END { for (p in tests) print p, "^(" tests[p] ")$" }' | sort
}
if [ "${1:-}" = "--plan" ] && [ $# -eq 2 ]; then
	plan "$2"
	exit
fi
if [ "$(id -u)" -ne 0 ]; then
	# Mount namespaces and chroot need root.
	exec sudo env PATH="$PATH" CI="${CI:-}" NIX_AIRGAP_CACHE="${NIX_AIRGAP_CACHE:-}" NIX_AIRGAP_WEED="${NIX_AIRGAP_WEED:-}" \
		NIX_AIRGAP_SUITES="${NIX_AIRGAP_SUITES:-}" NIX_MATRIX_JOBS="${NIX_MATRIX_JOBS:-}" bash "$self" "$@"
fi

# --inside ROOT DIR PKG TESTBIN REGEX runs one test binary in chroot ROOT,
# DIR holding its /tmp. It runs in a private mount namespace (see below).
if [ "${1:-}" = "--inside" ]; then
	root=$2 dir=$3 pkg=$4 bin=$5 regex=$6
	mnt=$dir/root
	mkdir -p "$mnt" "$dir/upper" "$dir/work"
	# The chroot as an overlay: the tests may write anywhere (/nix, say),
	# but into $dir, never into the shared cache.
	mount -t overlay overlay -o "lowerdir=$root,upperdir=$dir/upper,workdir=$dir/work" "$mnt"
	mount --rbind /dev "$mnt/dev"
	mount -t proc proc "$mnt/proc"
	mount --bind "$PWD" "$mnt/mnt"
	mount -o remount,bind,ro "$mnt/mnt"
	cp "$bin" "$mnt/tmp/nix-airgap.test"
	# SeaweedFS's weed, for the S3 tests, read-only from the host.
	weed=
	if [ -n "${NIX_AIRGAP_WEED:-}" ]; then
		weed=/tmp/weed
		touch "$mnt$weed"
		mount --bind -o ro "$NIX_AIRGAP_WEED" "$mnt$weed"
	fi
	exec chroot "$mnt" /usr/bin/env -i \
		PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp LANG=C.UTF-8 CI="${CI:-}" NIX_MATRIX=1 NIX_AIRGAP_WEED="$weed" \
		NIX_AIRGAP_CHANNEL_PATHS="${NIX_AIRGAP_CHANNEL_PATHS:-2000}" \
		/bin/sh -c 'cd "/mnt/$1" && exec /tmp/nix-airgap.test -test.v -test.count=1 -test.timeout=20m -test.run "$2"' \
		sh "$pkg" "$regex"
fi

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ ! -f "$1" ]; then
	echo "usage: $0 RECORD [RESULTS]   (RECORD: a file a go test run with NIXTEST_RECORD filled)" >&2
	exit 2
fi
record=$1 results=${2:-}
export PATH="/usr/local/go/bin:$PATH"

mapfile -t plan < <(plan "$record")
if [ "${#plan[@]}" -eq 0 ]; then
	echo "nix-matrix: no test ran real Nix, nothing to run in the chroots" >&2
	exit 0
fi
mapfile -t roots < <(bash scripts/setup.sh --nix-matrix)

work=$(mktemp -d "${TMPDIR:-/tmp}/nix-matrix.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
mkdir "$work/bin"
for entry in "${plan[@]}"; do
	pkg=${entry%% *}
	CGO_ENABLED=0 go test -c -o "$work/bin/${pkg//\//_}.test" "./$pkg"
done

jobs=${NIX_MATRIX_JOBS:-$(nproc)}
declare -A running=() # test binary PID -> its run's id

# finish PID STATUS prints the result of the test binary run PID stands
# for, which exited with STATUS.
finish() {
	local id=${running[$1]} pkg secs
	unset "running[$1]"
	pkg=$(cat "$work/$id.pkg")
	secs=$(( $(date +%s) - $(cat "$work/$id.start") ))
	if [ "$2" -eq 0 ]; then
		printf 'ok   %-24s %s  %ss\n' "$pkg" "$version" "$secs"
		# A skip can be legitimate (a test needing a newer Nix), but it
		# must show: say which and why.
		awk '
			/^=== (RUN|CONT|NAME) / { test = $3; next }
			/^ *--- SKIP: / { skipped[++n] = $3; next }
			/^ *--- (PASS|FAIL): / || /^(PASS|FAIL)$/ { next }
			test != "" { said[test] = said[test] "     " $0 "\n" }
			END { for (i = 1; i <= n; i++) printf "     --- SKIP: %s\n%s", skipped[i], said[skipped[i]] }
		' "$work/$id.log"
	else
		failed=1
		sed 's/^/    /' "$work/$id.log"
		printf 'FAIL %-24s %s (%s)  %ss\n' "$pkg" "$version" "$where" "$secs"
	fi
	rm -rf --one-file-system "${work:?}/$id"
}

# reap waits for one test binary to exit and prints its result.
reap() {
	local pid st=0
	wait -n -p pid "${!running[@]}" || st=$?
	finish "$pid" "$st"
}

status=0
for root in "${roots[@]}"; do
	version=$(cat "$root/nix-version")
	where="$(basename "$root") chroot"
	echo "nix-matrix: ${#plan[@]} packages under $version ($where)"
	failed=0
	for entry in "${plan[@]}"; do
		pkg=${entry%% *} regex=${entry#* }
		if [ "${#running[@]}" -ge "$jobs" ]; then reap; fi
		id=$(mktemp -d "$work/run.XXXXXX")
		id=${id##*/}
		echo "$pkg" >"$work/$id.pkg"
		date +%s >"$work/$id.start"
		# The mount namespace is private: nothing mounted in it is seen
		# outside, and it all goes when the test binary exits.
		unshare --mount --propagation private -- \
			bash "$self" --inside "$root" "$work/$id" "$pkg" "$work/bin/${pkg//\//_}.test" "$regex" \
			>"$work/$id.log" 2>&1 &
		running[$!]=$id
	done
	while [ "${#running[@]}" -gt 0 ]; do reap; done

	result=ok
	if [ "$failed" -ne 0 ]; then result=FAIL status=1; fi
	if [ -n "$results" ]; then
		echo "$version|$where|$result" >>"$results"
	else
		echo "nix-matrix: $version ($where): $result"
	fi
done
exit "$status"
