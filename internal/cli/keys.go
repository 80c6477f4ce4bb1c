package cli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// The one scheme for keys, the same in every command:
//
//	--secret-key KEY   the key that signs (pack, serve); keygen writes it
//	--public-key KEY   a key to trust, repeatable (verify, import, show,
//	                   client-config; plan and pack for upstream caches)
//
// KEY is a key file or the key's text, NAME:BASE64. Nix's
// --trusted-public-keys is --public-key taking a space-separated list, as
// nix.conf does. Older spellings stay as hidden aliases so that scripts
// keep working: --key for --secret-key, --trusted-public-key for
// --public-key.
const keyHelp = "Keys: --secret-key KEY signs (pack, serve) and --public-key KEY trusts a\n" +
	"signer (repeatable). KEY is a key file, such as keygen writes, or the key's\n" +
	"text NAME:BASE64 (nix-airgap help keys)."

// keysTopic is `nix-airgap help keys`.
const keysTopic = `Every command takes keys the same way.

  --secret-key KEY   the key that signs: pack signs the bundle with it, serve
                     adds its signature to every narinfo. keygen writes it.
  --public-key KEY   a key to trust (repeatable): verify, import, show and
                     diff trust bundles it signed, client-config tells
                     clients to trust it, plan and pack trust upstream
                     caches it signed.

KEY is a key file, as keygen and nix-store --generate-binary-cache-key write
them, or the key's own text NAME:BASE64, as in nix.conf. Prefer files for
secret keys: text on a command line lands in shell history.

Nix's names work too: --trusted-public-keys 'KEY KEY' is --public-key taking
a space-separated list, as nix.conf does, and --substituters 'URL URL' is
--substituter's; plan, pack and check take Nix's --store, for stores whose
paths are where they say (auto, daemon, local, unix://SOCKET). The older
spellings --key (for --secret-key) and --trusted-public-key (for
--public-key) still work.

A key is never printed, not even in an error: a secret key given where a
public key belongs is refused as such, without quoting it.`

// listFlag is the value of a repeatable flag: it appends each argument,
// or with split each space-separated word, as nix.conf lists are. It
// never fails and never shows its value: a key is checked, without being
// quoted, when it is read.
type listFlag struct {
	list  *[]string
	split bool
	typ   string
}

func (v listFlag) String() string { return "" }
func (v listFlag) Type() string   { return v.typ }

// GetSlice is the list, as pflag's slice flags give theirs.
func (v listFlag) GetSlice() []string { return *v.list }

func (v listFlag) Set(s string) error {
	*v.list = append(*v.list, flagWords(s, v.split)...)
	return nil
}

// flagWords is the argument s of a repeatable flag as the items it
// adds: s itself, or with split its space-separated words.
func flagWords(s string, split bool) []string {
	if split {
		return strings.Fields(s)
	}
	return []string{s}
}

// jobsFlag is the value of verify's, import's and gc's --jobs, where 0
// means the command's default.
type jobsFlag struct{ n *int }

func (v jobsFlag) String() string { return strconv.Itoa(*v.n) }
func (v jobsFlag) Type() string   { return "int" }
func (v jobsFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	switch {
	case err != nil:
		return errors.New("want a number")
	case n < 0:
		return errors.New("want 0, the default, or more")
	}
	*v.n = n
	return nil
}

// addJobsFlag adds -j, --jobs, as plan, pack and check have it.
func addJobsFlag(fs *pflag.FlagSet, jobs *int, usage string) {
	fs.VarP(jobsFlag{jobs}, "jobs", "j", usage)
}

// secretKeyFlag is the value of --secret-key or its alias: the last
// argument, with the flag's name, as publicKeyFlag keeps each. It never
// shows its value.
type secretKeyFlag struct {
	key  *keyArg
	name string
}

func (v secretKeyFlag) String() string     { return "" }
func (v secretKeyFlag) Type() string       { return "KEY" }
func (v secretKeyFlag) Set(s string) error { *v.key = keyArg{v.name, s}; return nil }

// keyArg is a key argument and the flag that gave it, which an error
// about it names: the user's spelling, not another of the same flag.
type keyArg struct{ flag, arg string }

// publicKeyFlag is the value of --public-key or an alias: a listFlag that
// keeps its name with each argument. It never shows its value.
type publicKeyFlag struct {
	list  *[]keyArg
	name  string
	split bool
}

func (v publicKeyFlag) String() string { return "" }
func (v publicKeyFlag) Type() string {
	if v.split {
		return "KEYS"
	}
	return "KEY"
}

func (v publicKeyFlag) Set(s string) error {
	for _, a := range flagWords(s, v.split) {
		*v.list = append(*v.list, keyArg{v.name, a})
	}
	return nil
}

// addPublicKeyFlags adds --public-key, Nix's --trusted-public-keys, and,
// hidden, the old spelling --trusted-public-key, in every command that
// takes public keys alike.
func addPublicKeyFlags(fs *pflag.FlagSet, keys *[]keyArg, usage string) {
	fs.Var(publicKeyFlag{keys, "public-key", false}, "public-key", usage+": a key file or NAME:BASE64 (repeatable)")
	fs.Var(publicKeyFlag{keys, "trusted-public-keys", true}, "trusted-public-keys", "Nix's name for --public-key: keys separated by spaces")
	fs.Var(publicKeyFlag{keys, "trusted-public-key", false}, "trusted-public-key", "old spelling of --public-key")
	fs.MarkHidden("trusted-public-key")
}

// publicKeyFlagsChanged reports whether any flag addPublicKeyFlags adds
// was given.
func publicKeyFlagsChanged(fs *pflag.FlagSet) bool {
	return changed(fs, "public-key", "trusted-public-keys", "trusted-public-key")
}

// addSecretKeyFlag adds --secret-key and, hidden, its old spelling --key.
func addSecretKeyFlag(fs *pflag.FlagSet, key *keyArg, usage string) {
	fs.Var(secretKeyFlag{key, "secret-key"}, "secret-key", usage+": a key file or NAME:BASE64")
	fs.Var(secretKeyFlag{key, "key"}, "key", "old spelling of --secret-key")
	fs.MarkHidden("key")
}

// changed reports whether any of the flags named was given.
func changed(fs *pflag.FlagSet, names ...string) bool {
	for _, n := range names {
		if f := fs.Lookup(n); f != nil && f.Changed {
			return true
		}
	}
	return false
}

// readSecretKey reads --secret-key, or returns nil if it is empty. A key
// that cannot be read (no such file, not a key, a public key) is a usage
// error naming the flag that gave it, in every command alike: the
// argument is wrong.
func readSecretKey(a keyArg) (*signing.SecretKey, error) {
	if a.arg == "" {
		return nil, nil
	}
	sk, err := signing.ReadSecretKey(a.arg)
	if err != nil {
		return nil, usageError{fmt.Errorf("--%s %w", a.flag, err)}
	}
	return &sk, nil
}

// readPublicKeys reads the arguments of --public-key, its aliases and
// --extra-trusted-public-keys, an error naming the flag that gave the
// key; a key that cannot be read is a usage error, as readSecretKey's is.
func readPublicKeys(args []keyArg) ([]signing.PublicKey, error) {
	var keys []signing.PublicKey
	for _, a := range args {
		pk, err := signing.ReadPublicKey(a.arg)
		if err != nil {
			return nil, usageError{fmt.Errorf("--%s %w", a.flag, err)}
		}
		keys = append(keys, pk)
	}
	return keys, nil
}
