package cli

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixstore"
	"github.com/nix-airgap/nix-airgap/internal/server"
)

// serveOptions are serve's flags.
type serveOptions struct {
	cfg                 server.Config
	listen              string
	secretKey           keyArg
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
		Long: "serve serves caches and bundles to stock Nix over HTTP: directories, or S3\n" +
			"buckets named as import names them, layered so that the first that has a file\n" +
			"wins. Clients get a binary cache, a hashed mirror of fixed-output files,\n" +
			"/flake-registry.json, the channels imported (/channels/NAME), /healthz and\n" +
			"/metrics. It never writes: imports show up without a restart, and any number\n" +
			"of serves can stand in front of one bucket.\n\n" +
			"With --secret-key, the cache key, it adds its signature to every narinfo, so\n" +
			"clients need to trust only that key; client-config prints their settings.\n" +
			"--nix-store also serves this machine's Nix store, as harmonia does (needs Nix).\n\n" +
			"It logs at info level: where it listens and, unless --access-log=false, every\n" +
			"request.\n\n" +
			detailsLine("serve") + "\n\n" +
			exitHelp(ExitCorrupt, ExitMissing, ExitUnavailable),
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !o.nixStore {
				return usageError{fmt.Errorf("serve: name at least one cache or bundle directory, or --nix-store")}
			}
			return nil
		},
		Example: "  nix-airgap serve /srv/nix-cache --listen 0.0.0.0:8080 --secret-key ~/keys/cache.sec\n" +
			"  nix-airgap serve 's3://nix-cache?endpoint=s3.site:8333&scheme=http&region=us-east-1' --listen 0.0.0.0:8080 --secret-key ~/keys/cache.sec\n" +
			"  nix-airgap serve /srv/nix-cache --nix-store --secret-key ~/keys/cache.sec",
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd.Context(), e, args) },
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", ":8080", "listen on `ADDR`, host:port")
	addSecretKeyFlag(f, &o.secretKey, "the cache key, whose signature serve adds to every narinfo")
	f.IntVar(&o.cfg.Priority, "priority", 40, "announce priority `N` in nix-cache-info (lower is preferred)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS with the certificate in `FILE` (PEM, with chain)")
	f.StringVar(&o.tlsKey, "tls-key", "", "the TLS certificate's private key `FILE` (PEM)")
	f.BoolVar(&o.accessLog, "access-log", true, "log every request (at info level)")
	f.String("log-level", "info", logLevelUsage)
	f.BoolVar(&o.nixStore, "nix-store", false, "also serve the valid paths of this machine's Nix store (needs Nix)")
	f.StringVar(&o.storeCompression, "nix-store-compression", "zstd", "compress --nix-store's NARs with `METHOD`: zstd or none")
	f.StringVar(&o.authFile, "auth-file", "", "require credentials: a `FILE` of 'basic USER:PASSWORD' and 'bearer TOKEN' lines")
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
	key, err := readSecretKey(o.secretKey)
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
			Nix: &nixcli.Runner{Log: e.log}, Compression: o.storeCompression, Key: cfg.Key, Log: e.log,
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
	if err != nil {
		// A port in use is a failure like any other (exit 1), not a bad
		// command line: the same command works once the port is free.
		// printError says so.
		return fmt.Errorf("serve: %w", err)
	}
	scheme := "http"
	if o.tlsCert != "" {
		scheme = "https"
	}
	attrs := []any{"addr", ln.Addr().String(), "scheme", scheme, "store", s.StoreDir()}
	if len(args) > 0 {
		attrs = append(attrs, "dirs", args)
	}
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
