package cli

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
)

func clientConfigCommand(e *env) *cobra.Command {
	var (
		c        clientConfig
		base     string
		keyFile  []keyArg
		version  string
		authFile string
		nixos    bool
		registry bool
	)
	var channels []string
	cmd := &cobra.Command{
		Use:   "client-config --url URL [--public-key KEY]... [--channel NAME]... [--nix-version VERSION] [--auth-file FILE] [--nixos]",
		Short: "Print the Nix settings a client of serve needs",
		Long: "client-config prints the nix.conf lines (or, with --nixos, a NixOS module)\n" +
			"that make a Nix client use a nix-airgap serve at URL as its binary cache,\n" +
			"hashed mirror and flake registry, trusting the given public keys: the cache\n" +
			"key's, whose secret half serve --secret-key signs with (or the packing keys').\n\n" +
			"The settings suit every Nix from 2.8 on; --nix-version adds those only newer\n" +
			"Nix knows. With serve's --auth-file it also says what the clients' netrc\n" +
			"needs, never printing a secret. --channel NAME says how clients use a channel\n" +
			"serve publishes.\n\n" +
			"flake-registry, which flake users need, makes Nix 2.26 and 2.34 (not 2.8) warn\n" +
			"on every command where flakes are off: client-config leaves it out if the Nix\n" +
			"on PATH (of --nix-version's version, if given) has flakes off, prints it if\n" +
			"flakes are on or the clients' Nix is 2.8, and otherwise prints it with a\n" +
			"comment saying so. --flake-registry or --flake-registry=false decides instead.\n\n" +
			detailsLine("client-config") + "\n\n" +
			exitHelp(ExitMissing),
		Args: exactArgs(0),
		Example: "  nix-airgap client-config --url http://cache.site:8080 --public-key ~/keys/cache.pub\n" +
			"  nix-airgap client-config --url http://cache.site:8080 --public-key ~/keys/cache.pub --nixos > airgap.nix\n" +
			"  nix-airgap client-config --url http://cache.site:8080 --public-key ~/keys/cache.pub --channel nixpkgs",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if c.url, err = checkServeURL(base); err != nil {
				return usageError{err}
			}
			if version != "" {
				if c.version, err = parseNixVersion(version); err != nil {
					return usageError{err}
				}
			}
			pks, err := readPublicKeys(keyFile)
			if err != nil {
				return fmt.Errorf("client-config: %w", err)
			}
			for _, pk := range pks {
				c.keys = append(c.keys, pk.String())
			}
			if len(pks) == 0 {
				// Said where it is seen: stdout goes into nix.conf.
				e.log.Warn("no --public-key: the clients will trust no key, and Nix refuses unsigned paths; give the public key of serve's --secret-key")
			}
			if authFile != "" {
				creds, err := loadCredentials(authFile)
				if err != nil {
					return fmt.Errorf("client-config: %w", err)
				}
				c.auth, c.users = true, creds.BasicUsers()
			}
			for _, name := range channels {
				if err := channel.CheckName(name); err != nil {
					if n, _, ok := strings.Cut(name, "="); ok && channel.CheckName(n) == nil {
						return usageError{fmt.Errorf("client-config: --channel: %w (client-config takes the NAME alone, --channel %s; NAME=SOURCE is pack's)", err, n)}
					}
					return usageError{fmt.Errorf("client-config: --channel: %w", err)}
				}
			}
			c.channels = channels
			var force *bool
			if cmd.Flags().Changed("flake-registry") {
				force = &registry
			}
			c.registry, c.registryWhy = flakeRegistryLine(cmd.Context(), e, c.version, force)
			if nixos {
				return c.writeNixOS(e.stdout)
			}
			return c.writeNixConf(e.stdout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&base, "url", "", "the server's `URL` as clients reach it: http://cache.example:8080")
	addPublicKeyFlags(f, &keyFile, "key clients are to trust")
	f.StringVar(&version, "nix-version", "", "the clients' Nix `VERSION`, 2.8 or later, such as 2.34: add the settings only it knows")
	f.StringVar(&authFile, "auth-file", "", "the auth `FILE` serve was given: print the clients' netrc settings")
	f.Var(listFlag{&channels, false, "NAME"}, "channel", "a channel serve publishes: print how clients use it (repeatable)")
	f.BoolVar(&nixos, "nixos", false, "print a NixOS module instead of nix.conf lines")
	f.BoolVar(&registry, "flake-registry", false, "print the flake-registry setting, which flake users need offline, or with =false leave it out (default: print it unless the Nix on PATH, of --nix-version's version if given, has flakes off)")
	return cmd
}

// parseNixVersion parses MAJOR.MINOR or MAJOR.MINOR.PATCH, of a Nix
// nix-airgap supports: 2.8 or later.
func parseNixVersion(s string) (nixcli.Version, error) {
	// Numbers, then at most a pre-release's "pre…" as nix --version
	// gives it ("2.26.0pre20241209_b1c0a5a"): ParseVersion takes anything
	// after the numbers ("2.8garbage") as Nix's own suffix.
	numbered, _, _ := strings.Cut(s, "pre")
	parts := strings.Split(numbered, ".")
	numbers := len(parts) == 2 || len(parts) == 3
	for _, p := range parts {
		numbers = numbers && p != "" && strings.Trim(p, "0123456789") == ""
	}
	v, err := nixcli.ParseVersion("nix (Nix) " + s)
	if err != nil || !numbers {
		return nixcli.Version{}, fmt.Errorf("client-config: --nix-version %q: want MAJOR.MINOR of Nix 2.8 or later, such as 2.34", s)
	}
	if !v.AtLeast(2, 8) { // a zero Version means "any Nix from 2.8 on"
		return nixcli.Version{}, fmt.Errorf("client-config: --nix-version %q: Nix %s is not supported: want 2.8 or later", s, s)
	}
	return v, nil
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

// clientConfig is what client-config prints, as settings every version
// from 2.8 accepts plus those the clients' version adds.
type clientConfig struct {
	url     string
	keys    []string
	version nixcli.Version // zero: any version from 2.8 on
	auth    bool           // serve wants credentials
	users   []string       // its basic users
	// channels are channels serve publishes, for nix-channel and NIX_PATH.
	channels []string
	// registry says whether flake-registry is printed, and registryWhy
	// why it is left out.
	registry    registryLine
	registryWhy []string
}

// registryLine is how client-config prints flake-registry.
type registryLine int

const (
	registryOmitted registryLine = iota
	registryPlain
	registryNoted // printed, with a comment that Nix without flakes warns of it
)

// registryNote is the comment above a noted flake-registry, a line at
// each newline.
const registryNote = "flake-registry: flake users need it offline. Nix with flakes off (2.26 and 2.34; not 2.8)\n" +
	"warns of it on every command: remove it there (client-config --flake-registry=false does)."

// flakeRegistryLine decides how client-config prints flake-registry:
// as force says if it is not nil; plainly for Nix 2.8 (version, or the
// Nix on PATH), which takes it without a word where flakes are off; as
// the Nix on PATH says if its version is version's (any, if version is
// zero); and else noted. why says why it is left out.
func flakeRegistryLine(ctx context.Context, e *env, version nixcli.Version, force *bool) (line registryLine, why []string) {
	switch {
	case force != nil && *force:
		return registryPlain, nil
	case force != nil:
		return registryOmitted, []string{"flake-registry, which flake users need offline, is left out (--flake-registry=false)."}
	case version.Major != 0 && !version.AtLeast(2, 9):
		return registryPlain, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nix := &nixcli.Runner{Log: e.log}
	local, err := nix.Version(ctx)
	switch {
	case err == nil && version.Major != 0 && (local.Major != version.Major || local.Minor != version.Minor):
		return registryNoted, nil
	case err == nil && !local.AtLeast(2, 9):
		return registryPlain, nil
	}
	var features []string
	if err == nil {
		features, err = nix.ExperimentalFeatures(ctx)
	}
	if err != nil {
		e.log.Debug("client-config: cannot ask the Nix on PATH whether flakes are on", "err", err)
		return registryNoted, nil
	}
	if slices.Contains(features, "flakes") {
		return registryPlain, nil
	}
	return registryOmitted, []string{
		fmt.Sprintf("flake-registry is left out: the Nix on PATH (%s) has flakes off, and warns of it", local.Raw),
		"on every command. Flake users need it offline: --flake-registry prints it.",
	}
}

// channelURL is where serve publishes the channel name.
func (c clientConfig) channelURL(name string) string { return c.url + "/" + channel.Dir + "/" + name }

// nixPath is the search path entry that finds the channel name on the
// server, with no nix-channel: NAME=URL/channels/NAME/nixexprs.tar.xz.
func (c clientConfig) nixPath(name string) string {
	return name + "=" + c.channelURL(name) + "/" + channel.FileName
}

// nixPathSplits reports whether NIX_PATH cannot hold the server's URL:
// Nix splits NIX_PATH at every ':' but the scheme's, so a port (or an
// IPv6 literal) cuts the entry in two. -I and nix.conf's nix-path take
// one entry each and are not split.
func (c clientConfig) nixPathSplits() bool {
	_, rest, _ := strings.Cut(c.url, "://")
	return strings.Contains(rest, ":")
}

// rootChannel is where root's nix-channel keeps the channel name, as
// NixOS's own default nix.nixPath names root's channels.
func rootChannel(name string) string {
	return name + "=/nix/var/nix/profiles/per-user/root/channels/" + name
}

// nixosConfig is the entry of NixOS's default nix.nixPath that
// nixos-rebuild without --flake needs; setting nix.nixPath replaces the
// default, so the module keeps it.
const nixosConfig = "nixos-config=/etc/nixos/configuration.nix"

// channelNotes say how to use the channels, as comments.
func (c clientConfig) channelNotes(nixos bool) []string {
	if len(c.channels) == 0 {
		return nil
	}
	var n []string
	switch {
	case nixos && c.nixPathSplits():
		n = append(n, "", "<nixpkgs> and the other channels, from root's nix-channel: run, as root,",
			"after the first switch and whenever an import brings a newer channel:")
	case nixos:
		n = append(n, "", "<nixpkgs> and the other channels, straight from the server (fetched again after",
			"tarball-ttl, an hour by default). To subscribe with nix-channel instead, name",
			"/nix/var/nix/profiles/per-user/root/channels/NAME in nix.nixPath and run, as root:")
	default:
		n = append(n, "", "Channels, for nix-channel and <nixpkgs> users. Subscribe (as each user, or root):")
	}
	for _, name := range c.channels {
		n = append(n, fmt.Sprintf("  nix-channel --add %s %s", c.channelURL(name), name))
	}
	// Without it, an update within the hour keeps the channel Nix
	// fetched before the import.
	n = append(n, "  nix-channel --update --option tarball-ttl 0")
	if nixos {
		if c.nixPathSplits() {
			n = append(n, "nix.nixPath cannot name the server's nixexprs.tar.xz: NixOS puts it in NIX_PATH,",
				"which Nix splits at every ':' but the scheme's, the port's too (a server URL",
				"without a port can; client-config then prints that form).")
		}
		return append(n, "Setting nix.nixPath replaces NixOS's default: nixos-config stays for nixos-rebuild.")
	}
	var paths []string
	for _, name := range c.channels {
		paths = append(paths, c.nixPath(name))
	}
	n = append(n, "or read the expressions straight from the server, with no nix-channel (fetched",
		"again after tarball-ttl, an hour by default): here in nix.conf,",
		"  nix-path = "+strings.Join(paths, " "),
		fmt.Sprintf("or per command: nix-build -I %s ...", c.nixPath(c.channels[0])))
	if c.nixPathSplits() {
		n = append(n, "but not in NIX_PATH, which Nix splits at every ':' but the scheme's, the port's",
			"too; where NIX_PATH is set, it overrides nix-path (from Nix 2.26 on; 2.8 reads",
			"nix-path): there, use nix-channel or -I.")
	} else {
		n = append(n, fmt.Sprintf("or in the environment: export NIX_PATH=%s", strings.Join(paths, ":")))
	}
	return n
}

// metaTTL is narinfo-cache-meta-ttl (Nix 2.34 and later): how long a
// client keeps the server's nix-cache-info (store dir, priority). Nix
// 2.26 keeps it a week, 2.8 for ever.
const metaTTL = 3600

// positiveTTL is narinfo-cache-positive-ttl: how long a client takes a
// narinfo it fetched as still there. Past it, a client asks again, and a
// path gc removed is a miss, which it builds, not a NAR it asks for and
// is refused.
const positiveTTL = 3600

// connectTimeout is connect-timeout, in seconds: without it Nix before
// 2.29 waits curl's 300 s for a server that is down. It also bounds the
// name lookup, so it is Nix 2.32's default, 15, not 2.29's 5, which
// cut off glibc's fallbacks for a DNS server that answers badly
// (NixOS/nix#13985) and made every download fail.
const connectTimeout = 15

// netrcFile is where Nix (nix-daemon, which downloads) reads credentials:
// its default, $NIX_CONF_DIR/netrc, spelt out.
const netrcFile = "/etc/nix/netrc"

// setting is one Nix setting: its value a string, a list of strings, an
// int or a bool.
type setting struct {
	name  string
	value any
	note  []string // comment lines above it
}

func (c clientConfig) settings() []setting {
	s := []setting{{name: "substituters", value: []string{c.url}}}
	if len(c.keys) > 0 {
		s = append(s, setting{name: "trusted-public-keys", value: c.keys})
	}
	s = append(s, setting{name: "hashed-mirrors", value: []string{c.url + "/"}})
	switch c.registry {
	case registryPlain:
		s = append(s, setting{name: "flake-registry", value: c.url + "/flake-registry.json"})
	case registryNoted:
		s = append(s, setting{"flake-registry", c.url + "/flake-registry.json", strings.Split(registryNote, "\n")})
	}
	s = append(s,
		// Misses are not remembered: the cache fills with every import.
		setting{name: "narinfo-cache-negative-ttl", value: 0},
		// Nor hits for long: a path gc removed is a miss within the
		// hour, where Nix's 30 days make it a missing-NAR error.
		setting{name: "narinfo-cache-positive-ttl", value: positiveTTL},
	)
	if c.version.AtLeast(2, 34) {
		s = append(s, setting{name: "narinfo-cache-meta-ttl", value: metaTTL})
	}
	// The new CLI turns substituters off when it finds no network but
	// loopback, unless the user set substitute (see notesLines).
	s = append(s, setting{name: "substitute", value: true}, setting{name: "connect-timeout", value: connectTimeout})
	if c.auth {
		s = append(s, setting{name: "netrc-file", value: netrcFile})
	}
	return s
}

// notes are the comments after the settings, "" for a blank comment line;
// they start with one, and never have two in a row.
func (c clientConfig) notes(nixos bool) []string {
	var n []string
	for _, line := range c.notesLines(nixos) {
		if line != "" || len(n) == 0 || n[len(n)-1] != "" {
			n = append(n, line)
		}
	}
	return n
}

func (c clientConfig) notesLines(nixos bool) []string {
	n := []string{""}
	if len(c.keys) == 0 {
		n = append(n, "trusted-public-keys: pass --public-key with the cache key serve signs with; Nix refuses unsigned paths.")
	}
	n = append(n, c.registryWhy...)
	if !c.version.AtLeast(2, 34) {
		n = append(n, fmt.Sprintf("Nix 2.34 and later also take narinfo-cache-meta-ttl = %d (--nix-version 2.34", metaTTL),
			"prints it), so that a change of serve --priority reaches them within the hour;",
			"older Nix keeps the server's nix-cache-info for a week (2.26) or for good (2.8).")
	}
	// Nix forgets that the system's nix.conf set a setting before it
	// checks the network (to send the daemon only the user's settings),
	// from 2.8 to 2.34 alike.
	n = append(n, "", "Where loopback is the only network (serve on this machine, nothing else up),",
		"the nix command (not nix-build or nix-store) turns substituters off unless the")
	if nixos {
		n = append(n, "user sets substitute: nix.settings (/etc/nix/nix.conf) does not count, but",
			"environment.variables.NIX_CONFIG = \"substitute = true\"; does, as does",
			"--option substitute true.")
	} else {
		n = append(n, "user sets substitute: /etc/nix/nix.conf does not count, ~/.config/nix/nix.conf",
			"does, as do NIX_CONFIG='substitute = true' and --option substitute true.")
	}
	if c.auth {
		host := c.url
		if u, err := url.Parse(c.url); err == nil {
			host = u.Hostname()
		}
		users := c.users
		if len(users) == 0 {
			users = []string{"USER"}
		}
		where := "which does the downloads"
		if nixos {
			where = "kept out of the Nix store"
		}
		n = append(n, "", fmt.Sprintf("serve asks for credentials: %s (mode 0600, read by nix-daemon,", netrcFile),
			where+") needs a line per user:")
		for _, u := range users {
			n = append(n, fmt.Sprintf("  machine %s login %s password PASSWORD", host, u))
		}
		if len(c.users) == 0 {
			n = append(n, "Nix sends only basic credentials: give serve a basic USER:PASSWORD line.")
		}
		n = append(n, "Without them every answer is 401: Nix up to 2.34 warns and carries on without",
			"this cache, building from source what it can; Nix 2.35 and later fail.")
	}
	n = append(n, "", "hashed-mirrors serves Nix's builtin:fetchurl only. nixpkgs' fetchurl reads its")
	if nixos {
		return append(n, "own list, from the nixpkgs config or from NIX_HASHED_MIRRORS in the",
			"environment of nix-daemon, which runs the builds.")
	}
	return append(n, "own list: set hashedMirrors in ~/.config/nixpkgs/config.nix,",
		fmt.Sprintf("  { hashedMirrors = [ \"%s/\" ]; }", c.url),
		"or NIX_HASHED_MIRRORS in the environment of nix-daemon, which runs the builds:",
		fmt.Sprintf("  systemctl edit nix-daemon  ->  [Service] Environment=NIX_HASHED_MIRRORS=%s/", c.url))
}

func (c clientConfig) forVersion() string {
	if c.version.Major == 0 {
		return "every Nix from 2.8 on"
	}
	return fmt.Sprintf("Nix %d.%d", c.version.Major, c.version.Minor)
}

func (c clientConfig) writeNixConf(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Nix client settings for the nix-airgap server at %s, for %s.\n", c.url, c.forVersion())
	// Not a user's nix.conf: nix-daemon takes substituters and
	// trusted-public-keys, restricted settings, only from trusted users.
	b.WriteString("# Add them to /etc/nix/nix.conf, then restart nix-daemon. A user's ~/.config/nix/nix.conf\n")
	b.WriteString("# serves only single-user Nix: nix-daemon ignores its substituters and trusted-public-keys\n")
	b.WriteString("# unless the user is in trusted-users.\n")
	for _, s := range c.settings() {
		for _, line := range s.note {
			b.WriteString("# " + line + "\n")
		}
		v := fmt.Sprint(s.value)
		if list, ok := s.value.([]string); ok {
			v = strings.Join(list, " ")
		}
		fmt.Fprintf(&b, "%s = %s\n", s.name, v)
	}
	for _, line := range append(c.notes(false), c.channelNotes(false)...) {
		b.WriteString(strings.TrimRight("# "+line, " ") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (c clientConfig) writeNixOS(w io.Writer) error {
	q := nixString
	var b strings.Builder
	fmt.Fprintf(&b, "# NixOS settings for the nix-airgap server at %s, for %s.\n", c.url, c.forVersion())
	b.WriteString("# Import this module from configuration.nix, then nixos-rebuild switch.\n")
	b.WriteString("{\n")
	b.WriteString("  nix.settings = {\n")
	for _, s := range c.settings() {
		var v string
		switch val := s.value.(type) {
		case []string:
			v = "["
			for _, e := range val {
				v += " " + q(e)
			}
			v += " ]"
		case string:
			v = q(val)
		default:
			v = fmt.Sprint(val)
		}
		for _, line := range s.note {
			b.WriteString("    # " + line + "\n")
		}
		fmt.Fprintf(&b, "    %s = %s;\n", s.name, v)
	}
	b.WriteString("  };\n")
	for _, line := range c.notes(true) {
		if line == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString("  # " + line + "\n")
	}
	fmt.Fprintf(&b, "  nixpkgs.config.hashedMirrors = [ %s ];\n", q(c.url+"/"))
	fmt.Fprintf(&b, "  systemd.services.nix-daemon.environment.NIX_HASHED_MIRRORS = %s;\n", q(c.url+"/"))
	if len(c.channels) > 0 {
		for _, line := range c.channelNotes(true) {
			if line == "" {
				b.WriteString("\n")
				continue
			}
			b.WriteString("  # " + line + "\n")
		}
		b.WriteString("  nix.nixPath = [")
		for _, name := range c.channels {
			entry := c.nixPath(name)
			if c.nixPathSplits() {
				entry = rootChannel(name)
			}
			b.WriteString(" " + q(entry))
		}
		b.WriteString(" " + q(nixosConfig) + " ];\n")
	}
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
