package nardelta

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// fuzzBase is the base every fuzzed delta is applied to: small, with a
// hash part to rewrite, so that every operation can reach it.
func fuzzBase(t testing.TB) []byte {
	return makeNAR(t, map[string]file{
		"bin/x":   {data: "#!/bin/sh\nexec /nix/store/" + oldDep + "-dep/bin/y\n", exec: true},
		"lib/a.1": {data: randomBytes(7, 3000)},
		"lib/a":   {link: "a.1"},
	})
}

// FuzzRebuild feeds Rebuild deltas against a fixed base. Whatever the
// delta, Rebuild returns an error or the NAR the delta names, never more
// than NarSize bytes, and never panics. The seed corpus (testdata/fuzz)
// holds deltas Encode made: a mass rebuild, a change, a new file.
func FuzzRebuild(f *testing.F) {
	baseNAR := fuzzBase(f)
	f.Fuzz(func(t *testing.T, delta []byte) {
		r, err := NewReader(bytes.NewReader(delta))
		if err != nil {
			return
		}
		defer r.Close()
		h := r.Header()
		if h.NarSize > 1<<20 {
			return // bounded by NarSize: checked below for what is run
		}
		base := newBase(t, baseNAR, h.Rewrites)
		lw := &limitWriter{max: h.NarSize}
		err = r.Rebuild(lw, base)
		if lw.n > h.NarSize {
			t.Fatalf("wrote %d bytes, NarSize %d", lw.n, h.NarSize)
		}
		if err == nil && lw.n != h.NarSize {
			t.Fatalf("no error, but %d bytes of %d", lw.n, h.NarSize)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrBaseMismatch) {
			t.Fatalf("error %v is neither ErrCorrupt nor ErrBaseMismatch", err)
		}
	})
}

type limitWriter struct {
	n, max uint64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	l.n += uint64(len(p))
	return len(p), nil
}

var _ io.Writer = (*limitWriter)(nil)

// TestFuzzSeeds checks that the committed seeds rebuild their NARs, so
// that the fuzzer starts from valid deltas. -update-seeds writes them
// anew from Encode.
func TestFuzzSeeds(t *testing.T) {
	baseNAR := fuzzBase(t)
	for name, newNAR := range fuzzTargets(t) {
		if *updateSeeds {
			delta := encode(t, baseNAR, newNAR, []Rewrite{{oldDep, newDep}}, EncodeOptions{})
			writeSeed(t, name, "go test fuzz v1\n[]byte("+quote(delta)+")\n")
		}
		got, err := rebuild(t, readSeed(t, name), baseNAR)
		if err != nil || !bytes.Equal(got, newNAR) {
			t.Errorf("testdata/fuzz/FuzzRebuild/%s does not rebuild its NAR (%v); run go test -run TestFuzzSeeds -update-seeds", name, err)
		}
	}
}

func fuzzTargets(t testing.TB) map[string][]byte {
	rebuilt := map[string]file{
		"bin/x":   {data: "#!/bin/sh\nexec /nix/store/" + newDep + "-dep/bin/y\n", exec: true},
		"lib/a.1": {data: randomBytes(7, 3000)},
		"lib/a":   {link: "a.1"},
	}
	changed := map[string]file{
		"bin/x":   rebuilt["bin/x"],
		"lib/a.2": {data: randomBytes(7, 3000)[:1000] + "changed" + randomBytes(7, 3000)[1000:]},
		"lib/a":   {link: "a.2"},
		"new":     {data: "a file the base lacks\n"},
	}
	return map[string][]byte{"mass-rebuild": makeNAR(t, rebuilt), "changed": makeNAR(t, changed)}
}
