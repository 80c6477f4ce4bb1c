package cli

import (
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
)

func clientConfigCommand(e *env) *cobra.Command {
	var (
		base    string
		keyFile []string
		nixos   bool
	)
	cmd := &cobra.Command{
		Use:   "client-config --url URL [--public-key KEY]... [--nixos]",
		Short: "Print the Nix settings a client of serve needs",
		Long: "client-config prints the nix.conf lines (or, with --nixos, a NixOS module)\n" +
			"that make a Nix client use a `nix-airgap serve` at URL as its binary cache,\n" +
			"hashed mirror and flake registry, trusting the given public keys (the site\n" +
			"key passed to serve --secret-key, or the bundle keys).\n\n" + exitHelp(ExitMissing),
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := checkServeURL(base)
			if err != nil {
				return usageError{err}
			}
			pks, err := readPublicKeys(keyFile)
			if err != nil {
				return fmt.Errorf("client-config: %w", err)
			}
			var keys []string
			for _, pk := range pks {
				keys = append(keys, pk.String())
			}
			if nixos {
				return writeNixOSConfig(e.stdout, u, keys)
			}
			return writeNixConf(e.stdout, u, keys)
		},
	}
	cmd.Flags().StringVar(&base, "url", "", "the server's URL as clients reach it: http://cache.example:8080")
	addPublicKeyFlags(cmd.Flags(), &keyFile, "key clients are to trust")
	cmd.Flags().BoolVar(&nixos, "nixos", false, "print a NixOS module instead of nix.conf lines")
	return cmd
}

// checkServeURL checks an http(s) base URL and returns it without a
// trailing slash.
func checkServeURL(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("client-config: --url is required")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("client-config: --url %q: want http://HOST[:PORT][/PATH] or https://…", s)
	}
	if strings.ContainsAny(s, " \t\n\"\\$") {
		return "", fmt.Errorf("client-config: --url %q: must not contain spaces, quotes, backslashes or '$'", s)
	}
	return strings.TrimRight(s, "/"), nil
}

func writeNixConf(w io.Writer, u string, keys []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Nix client settings for the nix-airgap server at %s.\n", u)
	b.WriteString("# Add them to /etc/nix/nix.conf (or ~/.config/nix/nix.conf), then restart nix-daemon.\n")
	fmt.Fprintf(&b, "substituters = %s\n", u)
	if len(keys) > 0 {
		fmt.Fprintf(&b, "trusted-public-keys = %s\n", strings.Join(keys, " "))
	} else {
		b.WriteString("# trusted-public-keys = SITE-KEY  (pass --public-key: Nix refuses unsigned paths)\n")
	}
	fmt.Fprintf(&b, "hashed-mirrors = %s/\n", u)
	fmt.Fprintf(&b, "flake-registry = %s/flake-registry.json\n", u)
	b.WriteString("narinfo-cache-negative-ttl = 0\n")
	b.WriteString("substitute = true\n")
	b.WriteString("connect-timeout = 5\n")
	b.WriteString("#\n")
	b.WriteString("# hashed-mirrors serves Nix's builtin:fetchurl only. nixpkgs' fetchurl reads its\n")
	b.WriteString("# own list: set hashedMirrors in ~/.config/nixpkgs/config.nix,\n")
	fmt.Fprintf(&b, "#   { hashedMirrors = [ \"%s/\" ]; }\n", u)
	b.WriteString("# or NIX_HASHED_MIRRORS in the environment of nix-daemon, which runs the builds:\n")
	fmt.Fprintf(&b, "#   systemctl edit nix-daemon  ->  [Service] Environment=NIX_HASHED_MIRRORS=%s/\n", u)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeNixOSConfig(w io.Writer, u string, keys []string) error {
	q := nixString
	var b strings.Builder
	fmt.Fprintf(&b, "# NixOS settings for the nix-airgap server at %s.\n", u)
	b.WriteString("# Import this module from configuration.nix, then nixos-rebuild switch.\n")
	b.WriteString("{\n")
	b.WriteString("  nix.settings = {\n")
	fmt.Fprintf(&b, "    substituters = [ %s ];\n", q(u))
	if len(keys) > 0 {
		b.WriteString("    trusted-public-keys = [")
		for _, k := range keys {
			b.WriteString(" " + q(k))
		}
		b.WriteString(" ];\n")
	} else {
		b.WriteString("    # trusted-public-keys = [ \"SITE-KEY\" ];  (pass --public-key: Nix refuses unsigned paths)\n")
	}
	fmt.Fprintf(&b, "    hashed-mirrors = [ %s ];\n", q(u+"/"))
	fmt.Fprintf(&b, "    flake-registry = %s;\n", q(u+"/flake-registry.json"))
	b.WriteString("    narinfo-cache-negative-ttl = 0;\n")
	b.WriteString("    substitute = true;\n")
	b.WriteString("    connect-timeout = 5;\n")
	b.WriteString("  };\n")
	b.WriteString("\n")
	b.WriteString("  # hashed-mirrors serves Nix's builtin:fetchurl only. nixpkgs' fetchurl reads its\n")
	b.WriteString("  # own list, from the nixpkgs config or from NIX_HASHED_MIRRORS in the\n")
	b.WriteString("  # environment of nix-daemon, which runs the builds.\n")
	fmt.Fprintf(&b, "  nixpkgs.config.hashedMirrors = [ %s ];\n", q(u+"/"))
	fmt.Fprintf(&b, "  systemd.services.nix-daemon.environment.NIX_HASHED_MIRRORS = %s;\n", q(u+"/"))
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// nixString quotes s as a Nix string literal: no interpolation, no escape
// Nix would read differently.
func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}
