// Command nethttp-floor answers every request with one fixed narinfo from
// a bare net/http handler: no routing, no lookup, no metrics. Benchmarked
// with wrk beside nginx, it shows how many narinfo requests per second any
// plain net/http server can answer on the machine, which bounds what
// nix-airgap serve can reach (see bench/analysis.md).
//
//	go run ./cmd/nethttp-floor -listen 127.0.0.1:40029 [-timeouts]
package main

import (
	"flag"
	"log"
	"net/http"
	"time"
)

const narinfo = `StorePath: /nix/store/0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-example
URL: nar/0af0l39rvc66rjhr3yfbpxbmzf2grw9ajanazxhj03690nyig68z.nar.zst
Compression: zstd
FileHash: sha256:0af0l39rvc66rjhr3yfbpxbmzf2grw9ajanazxhj03690nyig68z
FileSize: 84220
NarHash: sha256:175zd1p2ziy6xq0af0l39rvc66rjhr3yfbpxbmzf2grw9ajanaz
NarSize: 281416
References: 
Sig: bench-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==
`

func main() {
	listen := flag.String("listen", "127.0.0.1:40029", "address to listen on")
	timeouts := flag.Bool("timeouts", false, "set the timeouts nix-airgap serve sets against slow clients")
	flag.Parse()
	body := []byte(narinfo)
	srv := &http.Server{Addr: *listen, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = []string{"text/x-nix-narinfo"}
		w.Write(body)
	})}
	if *timeouts {
		// As internal/server's Serve sets them.
		srv.ReadHeaderTimeout = 10 * time.Second
		srv.ReadTimeout = 30 * time.Second
		srv.WriteTimeout = time.Hour
		srv.IdleTimeout = 2 * time.Minute
	}
	log.Fatal(srv.ListenAndServe())
}
