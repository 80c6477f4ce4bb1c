package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// The store section: serve --nix-store, which dumps NARs from the store as
// it sends them, against what a site would otherwise script: nix-store
// --dump piped into zstd.
const (
	scStoreNAR     = "NARs from the Nix store, every path of the closure"
	scStoreBig     = "NARs from the Nix store, the largest path"
	scStoreNarinfo = "serve --nix-store: the narinfo of every path of the closure"

	toolDumpZstd     = "nix-store --dump piped to zstd"
	toolServeStore   = "nix-airgap serve --nix-store (curl)"
	toolNarinfoFirst = "first requests, right after start"
	toolNarinfoAgain = "the same again (from memory)"
)

func (b *bench) startServeStore(ctx context.Context) (*server, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.bin, "serve", "--nix-store", "--secret-key", b.key, "--listen", addr, "--log-level", "warn", "--access-log=false")
	cmd.Env = b.env
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nix-airgap serve --nix-store: %w", err)
	}
	s := &server{cmd: cmd, addr: addr}
	if err := waitHTTP(ctx, "http://"+addr+"/nix-cache-info"); err != nil {
		s.stop()
		return nil, fmt.Errorf("nix-airgap serve --nix-store: %w", err)
	}
	return s, nil
}

// curlConfig writes a curl config fetching each URL to its output file
// ("/dev/null" when outs is nil).
func curlConfig(file, base string, urls, outs []string) error {
	var b strings.Builder
	for i, u := range urls {
		out := "/dev/null"
		if outs != nil {
			out = outs[i]
		}
		fmt.Fprintf(&b, "url = %q\noutput = %q\n", base+u, out)
	}
	return os.WriteFile(file, []byte(b.String()), 0o644)
}

// storeJob is what every run of the store section fetches or dumps.
type storeJob struct {
	dir, out          string
	paths             []string
	largest           int
	narinfos, nars    []string // URL paths, by path
	dumpList, bigList string   // "PATH OUTPUT" lines for the dump loop
}

// storeURLs asks a first server for every path's narinfo, for the NAR
// URL it names (the NAR hash is in it).
func (b *bench) storeURLs(ctx context.Context, j *storeJob) error {
	s, err := b.startServeStore(ctx)
	if err != nil {
		return err
	}
	defer s.stop()
	for i, p := range j.paths {
		j.narinfos[i] = "/" + filepath.Base(p)[:32] + ".narinfo"
		resp, err := http.Get("http://" + s.addr + j.narinfos[i])
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "URL: "); ok {
				j.nars[i] = "/" + u
			}
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || j.nars[i] == "" {
			return fmt.Errorf("serve --nix-store: %s: %s, no URL", j.narinfos[i], resp.Status)
		}
	}
	return nil
}

func (b *bench) newStoreJob(ctx context.Context) (*storeJob, error) {
	j := &storeJob{dir: filepath.Join(b.work, "store-bench")}
	j.out = filepath.Join(j.dir, "out")
	if err := os.MkdirAll(j.dir, 0o755); err != nil {
		return nil, err
	}
	for i, p := range b.closure.Paths {
		j.paths = append(j.paths, p.Path)
		if p.Size > b.closure.Paths[j.largest].Size {
			j.largest = i
		}
	}
	j.narinfos, j.nars = make([]string, len(j.paths)), make([]string, len(j.paths))
	if err := b.storeURLs(ctx, j); err != nil {
		return nil, err
	}
	var lines []string
	for i, p := range j.paths {
		lines = append(lines, fmt.Sprintf("%s %s/%d", p, j.out, i))
	}
	j.dumpList, j.bigList = filepath.Join(j.dir, "dump.list"), filepath.Join(j.dir, "dump-big.list")
	if err := os.WriteFile(j.dumpList, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	return j, os.WriteFile(j.bigList, []byte(fmt.Sprintf("%s %s/big\n", j.paths[j.largest], j.out)), 0o644)
}

func (b *bench) storeServe(ctx context.Context) error {
	j, err := b.newStoreJob(ctx)
	if err != nil {
		return err
	}
	series := map[string]*Series{}
	for _, sc := range []string{scStoreNAR, scStoreBig} {
		list := j.dumpList
		if sc == scStoreBig {
			list = j.bigList
		}
		series[sc+toolDumpZstd] = b.put(&Series{Scenario: sc, Tool: toolDumpZstd, Command: strings.ReplaceAll(`while read -r p o; do nix-store --dump "$p" | zstd -q > "$o"; done < `+list, b.work, "$WORK")})
		series[sc+toolServeStore] = b.put(&Series{Scenario: sc, Tool: toolServeStore, Command: "curl -s -K CONFIG  # a url and an output line per NAR URL, one connection; after nix-airgap serve --nix-store --secret-key $WORK/key.sec --listen $SERVER"})
	}
	series[toolNarinfoFirst] = b.put(&Series{Scenario: scStoreNarinfo, Tool: toolNarinfoFirst, Command: "curl -s -K CONFIG  # every narinfo of the closure, right after nix-airgap serve --nix-store answers"})
	series[toolNarinfoAgain] = b.put(&Series{Scenario: scStoreNarinfo, Tool: toolNarinfoAgain, Command: "curl -s -K CONFIG  # the same URLs once more"})
	for i := range b.runs {
		if err := b.storeRun(ctx, j, series, i); err != nil {
			return err
		}
	}
	removeAll(j.out)
	return nil
}

// storeRun is one run: a fresh server, its narinfos twice, then NARs from
// it and from the dump loop, in alternating order.
func (b *bench) storeRun(ctx context.Context, j *storeJob, series map[string]*Series, i int) error {
	s, err := b.startServeStore(ctx)
	if err != nil {
		return err
	}
	defer s.stop()
	base := "http://" + s.addr
	niConf := filepath.Join(j.dir, "narinfos.curl")
	if err := curlConfig(niConf, base, j.narinfos, nil); err != nil {
		return err
	}
	for _, tool := range []string{toolNarinfoFirst, toolNarinfoAgain} {
		if err := b.sample(ctx, series[tool], nil, "", "curl", "-s", "--fail", "-K", niConf); err != nil {
			return err
		}
	}
	var outs []string
	for k := range j.nars {
		outs = append(outs, fmt.Sprintf("%s/%d", j.out, k))
	}
	narConf, bigConf := filepath.Join(j.dir, "nars.curl"), filepath.Join(j.dir, "big.curl")
	if err := curlConfig(narConf, base, j.nars, outs); err != nil {
		return err
	}
	if err := curlConfig(bigConf, base, j.nars[j.largest:j.largest+1], []string{j.out + "/big"}); err != nil {
		return err
	}
	for _, sc := range []string{scStoreNAR, scStoreBig} {
		conf, list := narConf, j.dumpList
		if sc == scStoreBig {
			conf, list = bigConf, j.bigList
		}
		runs := []func() error{
			func() error {
				return b.sample(ctx, series[sc+toolDumpZstd], nil, j.out, "bash", "-c",
					`mkdir -p "$2" && while read -r p o; do nix-store --dump "$p" | zstd -q > "$o"; done < "$1"`, "dump", list, j.out)
			},
			func() error {
				return b.sample(ctx, series[sc+toolServeStore], nil, j.out, "curl", "-s", "--fail", "--create-dirs", "-K", conf)
			},
		}
		// Alternate which goes first.
		if i%2 == 1 {
			slices.Reverse(runs)
		}
		for _, run := range runs {
			if err := run(); err != nil {
				return err
			}
		}
	}
	if i == b.runs-1 {
		series[scStoreNAR+toolServeStore].Note = fmt.Sprintf("nix-airgap serve --nix-store's peak RSS in the last run: %d MiB", s.vmHWM()>>20)
	}
	return nil
}
