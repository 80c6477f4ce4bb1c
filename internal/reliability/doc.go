// Package reliability holds nix-airgap's cross-cutting fault tests: the
// real CLI killed with SIGKILL during import and pack, bundles damaged in
// every way media fail, imports onto a full filesystem. It has no code of
// its own, only tests; docs/reliability.md gives the figures and
// scripts/reliability.sh runs the long versions.
//
// The tests run the real nix-airgap command line as a child process: the
// test binary acts as nix-airgap when NIX_AIRGAP_RELIABILITY_AS_MAIN=1.
// Knobs, all optional:
//
//	NIX_AIRGAP_CRASH_ROUNDS  SIGKILL rounds per crash test (default 3)
//	NIX_AIRGAP_CRASH_PATHS   store paths in the crash tests' bundle (default 50)
package reliability
