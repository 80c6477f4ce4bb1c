package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixstore"
	"github.com/nix-airgap/nix-airgap/internal/server"
)

// serveOptions are serve's flags.
type serveOptions struct {
	cfg                 server.Config
	listen, keyFile     string
	authFile            string
	tlsCert, tlsKey     string
	accessLog, nixStore bool
	storeCompression    string
}

func serveCommand(e *env) *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve [DIR|s3://BUCKET?...]... [--nix-store] [--listen ADDR] [--secret-key KEY]",
		Short: "Serve caches and bundles to Nix: binary cache, hashed mirror, flake registry",
		Long: "serve serves one cache or bundle directory, or several layered (the first that\n" +
			"has a file wins), to stock Nix clients over HTTP: the binary cache protocol,\n" +
			"a hashed mirror of every flat fixed-output file (/sha256/HEX and the other\n" +
			"spellings nixpkgs and Nix use), /flake-registry.json, the channels imports\n" +
			"installed (/channels/NAME, for nix-channel and -I), /healthz and /metrics.\n" +
			"A cache in an S3 bucket (s3://BUCKET?endpoint=HOST:PORT&scheme=http&region=R,\n" +
			"as import takes it) is served too, layered like a directory: any number of\n" +
			"serve processes can stand in front of one bucket, each answering narinfos\n" +
			"from a small memory cache it checks against the bucket every second, so an\n" +
			"import is seen by every one within seconds, and streaming NARs from it.\n" +
			"It never writes. With --secret-key, the cache key, every narinfo also carries\n" +
			"its signature, so clients need to trust only that key. Imports into a served\n" +
			"cache show up without a restart. Use client-config for the client side.\n\n" +
			"With --nix-store it also serves the valid paths of this machine's Nix store,\n" +
			"after the DIRs, as harmonia does: narinfos from the store's metadata (asked of\n" +
			"Nix, then answered from memory), NARs dumped as they are sent (zstd, or none\n" +
			"with --nix-store-compression none), and the store's flat fixed-output paths\n" +
			"as a hashed mirror. This mode alone needs Nix on the machine.\n\n" +
			"serve logs at info level unless --log-level says otherwise: where it listens,\n" +
			"and, unless --access-log=false, every request.\n\n" + exitHelp(ExitCorrupt, ExitMissing, ExitUnavailable),
		Annotations: map[string]string{defaultLogLevel: "info"},
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !o.nixStore {
				return usageError{fmt.Errorf("serve: name at least one cache or bundle directory, or --nix-store")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd.Context(), e, args) },
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", ":8080", "address to listen on, host:port")
	addSecretKeyFlag(f, &o.keyFile, "the cache key, whose signature serve adds to every narinfo")
	f.IntVar(&o.cfg.Priority, "priority", 40, "priority announced in nix-cache-info (lower is preferred)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM, with chain)")
	f.StringVar(&o.tlsKey, "tls-key", "", "the TLS certificate's private key (PEM)")
	f.BoolVar(&o.accessLog, "access-log", true, "log every request (at info level)")
	f.BoolVar(&o.nixStore, "nix-store", false, "also serve the valid paths of this machine's Nix store (needs Nix)")
	f.StringVar(&o.storeCompression, "nix-store-compression", "zstd", "how --nix-store sends NARs: zstd or none")
	f.StringVar(&o.authFile, "auth-file", "", "require credentials: a file of 'basic USER:PASSWORD' and 'bearer TOKEN' lines")
	return cmd
}

// run serves args (and the Nix store) until ctx ends.
func (o *serveOptions) run(ctx context.Context, e *env, args []string) error {
	cfg := o.cfg
	cfg.Dirs = args
	cfg.Log = e.log
	if o.accessLog {
		cfg.AccessLog = e.log
	}
	cfg.TLSCertFile, cfg.TLSKeyFile = o.tlsCert, o.tlsKey
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return usageError{fmt.Errorf("serve: --listen %s: want HOST:PORT, such as :8080 or 127.0.0.1:8080", o.listen)}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usageError{fmt.Errorf("serve: --tls-cert and --tls-key go together")}
	}
	key, err := readSecretKey(o.keyFile)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	cfg.Key = key
	if o.authFile != "" {
		c, err := loadCredentials(o.authFile)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		cfg.Auth = c
	}
	if o.storeCompression != compression.Zstd && o.storeCompression != compression.None {
		return usageError{fmt.Errorf("serve: --nix-store-compression %q: want zstd or none", o.storeCompression)}
	}
	if o.nixStore {
		st, err := nixstore.Open(ctx, nixstore.Options{
			Nix: &nixcli.Runner{Logger: e.log}, Compression: o.storeCompression, Key: cfg.Key, Log: e.log,
		})
		if err != nil {
			return err
		}
		defer st.Close()
		cfg.NixStore = st
		if cfg.Key == nil {
			e.log.Warn("serving the Nix store without --secret-key: clients that require signatures accept only paths the store holds signatures for")
		}
	}
	s, err := server.New(cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	ln, err := net.Listen("tcp", o.listen)
	if errors.Is(err, syscall.EADDRINUSE) {
		// A failure like any other (exit 1), not a bad command line:
		// the same command works once the port is free.
		return fmt.Errorf("serve: %w\nAnother server listens on %s (one more serve?): stop it, or choose another address with --listen", err, o.listen)
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	scheme := "http"
	if o.tlsCert != "" {
		scheme = "https"
	}
	attrs := []any{"addr", ln.Addr().String(), "scheme", scheme, "store", s.StoreDir(), "dirs", args}
	if o.nixStore {
		attrs = append(attrs, "nix-store", true)
	}
	if cfg.Key != nil {
		attrs = append(attrs, "cache-key", cfg.Key.Public().String())
	}
	e.log.Info("serving", attrs...)
	if cfg.Key == nil && len(args) > 0 {
		// client-config's clients trust the cache key alone.
		e.log.Warn("serving without --secret-key: narinfos carry only the signatures of the keys that packed them, so clients must trust those keys, not a cache key")
	}
	if err := s.Serve(ctx, ln); err != nil {
		return err
	}
	e.log.Info("stopped")
	return nil
}

// loadCredentials reads --auth-file. A file that cannot be read or holds
// no credentials is a usage error, as a --secret-key file is.
func loadCredentials(path string) (*server.Credentials, error) {
	c, err := server.LoadCredentials(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("--auth-file %w", err)}
	}
	return c, nil
}
