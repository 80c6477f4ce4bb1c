package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// metrics counts what the server did, for Prometheus' text exposition
// format (version 0.0.4), written by hand: a handful of counters do not
// justify a client library and its dependencies in the offline binary.
type metrics struct {
	mu       sync.Mutex
	requests map[routeStatus]uint64

	bytesOut    atomic.Uint64
	narinfos    atomic.Uint64
	nars        atomic.Uint64
	mirrorFiles atomic.Uint64
}

type routeStatus struct {
	route  string
	status int
}

func newMetrics() *metrics { return &metrics{requests: make(map[routeStatus]uint64)} }

func (m *metrics) request(route string, status int, bytes int64) {
	m.mu.Lock()
	m.requests[routeStatus{route, status}]++
	m.mu.Unlock()
	m.bytesOut.Add(uint64(bytes))
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	m := s.metrics
	m.mu.Lock()
	keys := make([]routeStatus, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b routeStatus) int {
		if a.route != b.route {
			if a.route < b.route {
				return -1
			}
			return 1
		}
		return a.status - b.status
	})
	var b bytes.Buffer
	b.WriteString("# HELP nix_airgap_http_requests_total HTTP requests by route and status code.\n")
	b.WriteString("# TYPE nix_airgap_http_requests_total counter\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "nix_airgap_http_requests_total{route=%q,code=\"%d\"} %d\n", k.route, k.status, m.requests[k])
	}
	m.mu.Unlock()
	for _, c := range []struct {
		name, help string
		v          *atomic.Uint64
	}{
		{"nix_airgap_http_response_bytes_total", "Bytes sent in response bodies.", &m.bytesOut},
		{"nix_airgap_narinfos_served_total", "Narinfos served.", &m.narinfos},
		{"nix_airgap_nars_served_total", "NAR files served (including HEAD and ranges).", &m.nars},
		{"nix_airgap_mirror_files_served_total", "Hashed-mirror files served in full.", &m.mirrorFiles},
	} {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", c.name, c.help, c.name, c.name, c.v.Load())
	}
	s.layerMetrics(r.Context(), &b)
	writeBytes(w, r, "text/plain; version=0.0.4; charset=utf-8", b.Bytes())
	return nil
}

// layerMetrics writes the state of each bucket layer's breaker, after a
// probe of those down whose back-off is over (breaker.probe); a
// directory has none.
func (s *Server) layerMetrics(ctx context.Context, b *bytes.Buffer) {
	var buckets []*layer
	var probes sync.WaitGroup
	for _, l := range s.layers {
		if l.breaker != nil {
			buckets = append(buckets, l)
			probes.Go(func() { l.breaker.probe(ctx) })
		}
	}
	probes.Wait()
	if len(buckets) == 0 {
		return
	}
	// A label value as the text format escapes it.
	label := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	b.WriteString("# HELP nix_airgap_layer_up Whether a bucket layer is served: 1 up, 0 down (its store did not answer; skipped until it does) or left out.\n")
	b.WriteString("# TYPE nix_airgap_layer_up gauge\n")
	for _, l := range buckets {
		up := 0
		if l.breaker.up() {
			up = 1
		}
		fmt.Fprintf(b, "nix_airgap_layer_up{layer=\"%s\"} %d\n", label.Replace(l.dir), up)
	}
	// A state set, as OpenMetrics has it: one series per state, 1 for
	// the layer's, so that left out (a mistake to fix and a restart)
	// shows apart from down (it comes back by itself).
	b.WriteString("# HELP nix_airgap_layer_state A bucket layer's state: 1 for the one it is in, up, down (its store did not answer; tried again) or left_out (it answered, but is not a cache for the store served; until serve restarts).\n")
	b.WriteString("# TYPE nix_airgap_layer_state gauge\n")
	for _, l := range buckets {
		st := l.breaker.state()
		for _, s := range []string{stateUp, stateDown, stateLeftOut} {
			v := 0
			if s == st {
				v = 1
			}
			fmt.Fprintf(b, "nix_airgap_layer_state{layer=\"%s\",state=%q} %d\n", label.Replace(l.dir), s, v)
		}
	}
	b.WriteString("# HELP nix_airgap_layer_trips_total Times a bucket layer went down, at start included.\n")
	b.WriteString("# TYPE nix_airgap_layer_trips_total counter\n")
	for _, l := range buckets {
		fmt.Fprintf(b, "nix_airgap_layer_trips_total{layer=\"%s\"} %d\n", label.Replace(l.dir), l.breaker.trips.Load())
	}
}
