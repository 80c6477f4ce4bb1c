package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

func keygenCommand(e *env) *cobra.Command {
	var name, secretFile, publicFile string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen --name NAME --secret-key FILE --public-key FILE",
		Short: "Make a signing key pair in Nix's format",
		Long: "keygen writes an ed25519 key pair in the format of\n" +
			"nix-store --generate-binary-cache-key. A site has two: the packing key, whose\n" +
			"secret half pack signs bundles with and whose public half verify and import\n" +
			"trust, and the cache key, made inside the airgap, whose secret half serve\n" +
			"signs with and whose public half clients trust. Like Nix's, it prints nothing\n" +
			"when it succeeds.\n\n" +
			detailsLine("keygen") + "\n\n" +
			exitHelp(ExitMissing),
		Args: exactArgs(0),
		Example: "  nix-airgap keygen --name site-1 --secret-key ~/keys/site.sec --public-key ~/keys/site.pub\n" +
			"  nix-airgap keygen --name cache.site-1 --secret-key ~/keys/cache.sec --public-key ~/keys/cache.pub",
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, f := range []struct{ flag, value string }{{"--name", name}, {"--secret-key", secretFile}, {"--public-key", publicFile}} {
				if f.value == "" {
					return usageError{fmt.Errorf("keygen: %s is required", f.flag)}
				}
			}
			if abs(secretFile) == abs(publicFile) {
				return usageError{fmt.Errorf("keygen: --secret-key and --public-key are both %s: the public key would overwrite the secret key; give two files", secretFile)}
			}
			for _, f := range []struct{ flag, name string }{{"--secret-key", secretFile}, {"--public-key", publicFile}} {
				// Renamed over with --force, a symlink such as /dev/stdout
				// would be replaced by a file.
				if fi, err := os.Lstat(f.name); err == nil && !fi.Mode().IsRegular() {
					return usageError{fmt.Errorf("keygen: %s %s: not a regular file (a symlink, a directory, a device or a pipe): give the file to write the key to", f.flag, f.name)}
				}
			}
			sk, pk, err := signing.Generate(name)
			if errors.Is(err, signing.ErrBadKey) {
				// A name that cannot be a key's is the command line's fault.
				return usageError{fmt.Errorf("keygen: --name %q: %w", name, errors.Unwrap(err))}
			}
			if err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			err = writeKeyPair(secretFile, publicFile, sk.String(), pk.String(), force)
			switch {
			case errors.Is(err, errKeyExists):
				return err // "keygen FILE: file exists …"
			case err != nil:
				return fmt.Errorf("keygen: %w", err)
			}
			e.log.Info("wrote a key pair: keep the secret key secret, give the public key out", "name", name, "secret-key", secretFile, "public-key", publicFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the key's `NAME`, conventionally the cache's host name and a number: cache.example.org-1")
	cmd.Flags().StringVar(&secretFile, "secret-key", "", "write the secret key to `FILE` (mode 0600)")
	cmd.Flags().StringVar(&publicFile, "public-key", "", "write the public key to `FILE`")
	cmd.Flags().BoolVar(&force, "force", false, "replace existing key files")
	return cmd
}

// errKeyExists refuses to replace a key file without --force.
var errKeyExists = errors.New("file exists (use --force to replace it)")

// writeKeyPair writes both key files or, failing, neither: both temp
// files are written before either is put in place, the secret key last,
// and a public key in place when the secret key cannot follow it is
// removed. Unless force, neither replaces a file: each goes in place only
// if its name is free at that moment (CommitNew), so a key file another
// process makes meanwhile is never overwritten, as a check first would
// let it be.
func writeKeyPair(secretFile, publicFile, secret, public string, force bool) error {
	var files []*atomicfile.File
	for _, k := range []struct {
		name, data string
		perm       fs.FileMode
	}{{publicFile, public, 0o644}, {secretFile, secret, 0o600}} {
		f, err := atomicfile.Create(k.name, k.perm)
		if err != nil {
			return err
		}
		defer f.Abort()
		if _, err := f.WriteString(k.data); err != nil {
			return fmt.Errorf("write %s: %w", k.name, err)
		}
		files = append(files, f)
	}
	commit := func(f *atomicfile.File) error {
		if force {
			return f.Commit()
		}
		err := f.CommitNew()
		if errors.Is(err, fs.ErrExist) {
			return &fs.PathError{Op: "keygen", Path: f.Name(), Err: errKeyExists}
		}
		return err
	}
	if err := commit(files[0]); err != nil {
		return err
	}
	if err := commit(files[1]); err != nil {
		os.Remove(publicFile)
		return err
	}
	return nil
}

// abs is name as an absolute path, or as it is if it has none.
func abs(name string) string {
	if a, err := filepath.Abs(name); err == nil {
		return a
	}
	return name
}
