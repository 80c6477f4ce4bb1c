package nixcli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// IsolatedEnv makes a Nix installation of its own under root — store,
// state, log, conf and cache dirs — and returns the complete environment
// for nix programs to use it: nothing of the caller's Nix setup leaks in.
// An empty storeDir means root/store. Builds run unsandboxed and without
// build users, as single-user Nix on a machine with neither needs;
// substituters are off until extraConf (appended to nix.conf) sets them.
func IsolatedEnv(root string, storeDir storepath.Dir, extraConf string) ([]string, error) {
	if storeDir == "" {
		storeDir = storepath.Dir(filepath.Join(root, "store"))
	}
	conf := filepath.Join(root, "etc")
	dirs := []struct{ key, dir string }{
		{"NIX_STORE_DIR", string(storeDir)},
		{"NIX_STATE_DIR", filepath.Join(root, "var/nix")},
		{"NIX_LOG_DIR", filepath.Join(root, "var/log/nix")},
		{"NIX_CONF_DIR", conf},
		{"HOME", filepath.Join(root, "home")},
		{"XDG_CACHE_HOME", filepath.Join(root, "home/.cache")},
		{"XDG_CONFIG_HOME", filepath.Join(root, "home/.config")},
		{"XDG_DATA_HOME", filepath.Join(root, "home/.local/share")},
		{"XDG_STATE_HOME", filepath.Join(root, "home/.local/state")},
		{"TMPDIR", filepath.Join(root, "tmp")},
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"NIX_REMOTE=",
		"NIX_PATH=",
		"NIX_USER_CONF_FILES=",
		"LANG=C.UTF-8",
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d.dir, 0o755); err != nil {
			return nil, fmt.Errorf("isolated nix in %s: %w", root, err)
		}
		env = append(env, d.key+"="+d.dir)
	}
	registry := filepath.Join(conf, "empty-registry.json")
	nixConf := "sandbox = false\n" +
		"build-users-group =\n" +
		"substituters =\n" +
		"experimental-features = nix-command flakes\n" +
		// Fail fast offline; Nix's default retries for seconds.
		"download-attempts = 1\n" +
		// Never download the global registry.
		"flake-registry = " + registry + "\n" +
		extraConf
	for name, content := range map[string]string{
		filepath.Join(conf, "nix.conf"): nixConf,
		registry:                        `{"flakes":[],"version":2}`,
	} {
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			return nil, fmt.Errorf("isolated nix in %s: %w", root, err)
		}
	}
	return env, nil
}
