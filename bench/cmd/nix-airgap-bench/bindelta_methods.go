package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nardelta"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// BDMethod is one delta method's total over one scenario's paths: the
// candidates docs/design.md chooses from, measured on the same NARs.
type BDMethod struct {
	Scenario string  `json:"scenario"`
	Method   string  `json:"method"`
	Bytes    int64   `json:"bytes"`
	Seconds  float64 `json:"seconds"` // encoding, one core
	Paths    int     `json:"paths"`   // the paths it was measured on
	Note     string  `json:"note,omitempty"`
}

// Method names.
const (
	mPlain     = "zstd NAR (the plain delta)"
	mDictLong  = "zstd, whole base NAR as raw dictionary, long window"
	mCDC       = "content-defined chunks (16 KiB), hashes normalised"
	mBsdiff    = "bsdiff (bsdiff 4.3), hashes normalised"
	mOursNoRw  = "nardelta without hash rewriting"
	mOurs      = "nardelta (files by path, hashes rewritten, zstd patches)"
	bsdiffSkip = 32 << 20 // bsdiff needs ~17 bytes of memory per byte: larger NARs are left out
)

// compareMethods measures every candidate method on each update
// scenario's paths against their base paths, in-process on one core.
func compareMethods(ctx context.Context, log *slog.Logger, env []string, dir storepath.Dir, closures map[string]*bdClosure, bumped map[string]bool) ([]BDMethod, error) {
	base := closures["base"]
	_, bsdiffErr := exec.LookPath("bsdiff")
	var out []BDMethod
	for _, name := range []string{"mass rebuild", "version bumps"} {
		c := closures[name]
		tot := map[string]*BDMethod{}
		for _, m := range []string{mPlain, mDictLong, mCDC, mBsdiff, mOursNoRw, mOurs} {
			tot[m] = &BDMethod{Scenario: name, Method: m}
		}
		for i := range c.Paths[:len(c.Paths)-1] {
			oldP, newP := base.Paths[i], c.Paths[i]
			log.Info("bindelta: methods", "scenario", name, "path", newP.Pkg)
			oldNAR, err := dumpNAR(oldP.Path)
			if err != nil {
				return nil, err
			}
			newNAR, err := dumpNAR(newP.Path)
			if err != nil {
				return nil, err
			}
			rws := []nardelta.Rewrite{{Old: hashOf(oldP.Path), New: hashOf(newP.Path)}}
			for j, r := range newP.Refs {
				rws = append(rws, nardelta.Rewrite{Old: hashOf(oldP.Refs[j]), New: hashOf(r)})
			}
			add := func(m string, f func() (int, error)) error {
				start := time.Now()
				n, err := f()
				if err != nil {
					return fmt.Errorf("%s, %s: %w", m, newP.Pkg, err)
				}
				if n < 0 {
					return nil
				}
				tot[m].Bytes += int64(n)
				tot[m].Seconds += time.Since(start).Seconds()
				tot[m].Paths++
				return nil
			}
			steps := []struct {
				m string
				f func() (int, error)
			}{
				{mPlain, func() (int, error) { return zstdSize(newNAR, nil) }},
				{mDictLong, func() (int, error) { return zstdSize(newNAR, oldNAR) }},
				{mCDC, func() (int, error) { return cdcSize(rewriteAll(oldNAR, rws), newNAR) }},
				{mOursNoRw, func() (int, error) { return oursSize(oldNAR, newNAR, nil) }},
				{mOurs, func() (int, error) { return oursSize(oldNAR, newNAR, rws) }},
				{mBsdiff, func() (int, error) {
					if bsdiffErr != nil || len(newNAR) > bsdiffSkip || len(oldNAR) > bsdiffSkip {
						return -1, nil
					}
					return bsdiffSize(ctx, rewriteAll(oldNAR, rws), newNAR)
				}},
			}
			for _, s := range steps {
				if err := add(s.m, s.f); err != nil {
					return nil, err
				}
			}
		}
		tot[mBsdiff].Note = fmt.Sprintf("on the %d paths whose NARs are at most %d MiB (bsdiff holds about 17 bytes per byte in memory)", tot[mBsdiff].Paths, bsdiffSkip>>20)
		for _, m := range []string{mPlain, mDictLong, mCDC, mBsdiff, mOursNoRw, mOurs} {
			if tot[m].Paths > 0 {
				out = append(out, *tot[m])
			}
		}
	}
	return out, nil
}

func hashOf(p string) string {
	h, _, _ := storepath.ParseBase(filepath.Base(p))
	return h
}

func dumpNAR(p string) ([]byte, error) {
	var b bytes.Buffer
	err := nar.Dump(&b, p)
	return b.Bytes(), err
}

// zstdSize compresses data at the level pack uses, or, with a dictionary,
// at the level nardelta's patches use and a window that reaches over all
// of it (at most zstd's 512 MiB).
func zstdSize(data, dict []byte) (int, error) {
	opts := []zstd.EOption{zstd.WithEncoderConcurrency(1)}
	if dict != nil {
		window := min(1<<bits.Len(uint(len(dict)+len(data))), zstd.MaxWindowSize)
		opts = append(opts, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithWindowSize(max(window, zstd.MinWindowSize)), zstd.WithEncoderDictRaw(1, dict))
	}
	e, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		return 0, err
	}
	defer e.Close()
	return len(e.EncodeAll(data, nil)), nil
}

func oursSize(oldNAR, newNAR []byte, rws []nardelta.Rewrite) (int, error) {
	f, err := os.CreateTemp("", "bindelta-base-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	base, err := nardelta.NewBase(f, bytes.NewReader(oldNAR), rws)
	if err != nil {
		return 0, err
	}
	h := nar.NewHashWriter(io.Discard)
	h.Write(newNAR)
	var out bytes.Buffer
	if err := nardelta.Encode(&out, bytes.NewReader(newNAR), h.Sum(), uint64(len(newNAR)), base, nardelta.EncodeOptions{}); err != nil {
		return 0, err
	}
	return out.Len(), nil
}

// rewriteAll is nardelta's rewriting, for the other methods to diff
// against the same normalised base.
func rewriteAll(data []byte, rws []nardelta.Rewrite) []byte {
	f, err := os.CreateTemp("", "bindelta-rw-")
	if err != nil {
		return data
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := nardelta.NewBase(f, bytes.NewReader(data), rws); err != nil {
		return data
	}
	out, err := os.ReadFile(f.Name())
	if err != nil {
		return data
	}
	return out
}

// cdcSize chunks both NARs by content (a gear hash, 16 KiB chunks on
// average) and compresses the new NAR's chunks the base lacks.
func cdcSize(oldNAR, newNAR []byte) (int, error) {
	have := map[[32]byte]bool{}
	for _, c := range chunks(oldNAR) {
		have[sha256.Sum256(c)] = true
	}
	var missing []byte
	refs := 0
	for _, c := range chunks(newNAR) {
		if have[sha256.Sum256(c)] {
			refs++
			continue
		}
		missing = append(missing, c...)
	}
	n, err := zstdSize(missing, nil)
	// Each chunk of the new NAR is named by a 32-byte hash.
	return n + 32*refs, err
}

var gear = func() (g [256]uint64) {
	x := uint64(0x9e3779b97f4a7c15)
	for i := range g {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		g[i] = x
	}
	return g
}()

func chunks(data []byte) [][]byte {
	const mask = 1<<14 - 1
	var out [][]byte
	start := 0
	var h uint64
	for i, b := range data {
		h = h<<1 + gear[b]
		if i-start >= 2048 && (h&mask == 0 || i-start >= 64<<10) {
			out = append(out, data[start:i+1])
			start, h = i+1, 0
		}
	}
	if start < len(data) {
		out = append(out, data[start:])
	}
	return out
}

func bsdiffSize(ctx context.Context, oldNAR, newNAR []byte) (int, error) {
	dir, err := os.MkdirTemp("", "bindelta-bsdiff-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	o, n, p := filepath.Join(dir, "old"), filepath.Join(dir, "new"), filepath.Join(dir, "patch")
	if err := os.WriteFile(o, oldNAR, 0o644); err != nil {
		return 0, err
	}
	if err := os.WriteFile(n, newNAR, 0o644); err != nil {
		return 0, err
	}
	if out, err := exec.CommandContext(ctx, "bsdiff", o, n, p).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("bsdiff: %w: %s", err, out)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return int(fi.Size()), nil
}
