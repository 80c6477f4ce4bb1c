package storage_test

import (
	"bytes"
	"context"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// A file spooled into a directory lands with the mode the umask gives a
// new file, as Nix's binary cache files do, not os.CreateTemp's 0600: a
// bundle or cache only its writer could read would not serve.
func TestSpoolCommitMode(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	top := filepath.Join(t.TempDir(), "cache")
	d, err := storage.CreateDir(top)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := storage.NewSpool(d, "")
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for _, tc := range []struct {
		name   string
		create func() (*storage.SpoolFile, error)
	}{
		{"nar/a.nar.zst", sp.CreateTemp},
		{"b.narinfo", func() (*storage.SpoolFile, error) { return sp.Create("b.narinfo") }},
	} {
		f, err := tc.create()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
		p := f.Name()
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sp.Commit(context.Background(), p, tc.name); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(filepath.Join(top, filepath.FromSlash(tc.name)))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fi.Mode().Perm(), fs.FileMode(0o644); got != want {
			t.Errorf("%s: mode %v, want %v", tc.name, got, want)
		}
	}
}

// TestPutFileCounts: a file larger than the copy buffer, put into a
// directory or uploaded to a real SeaweedFS in parts, is counted as it
// goes, not only once it is in: a multi-GB NAR's upload shows progress
// within it. Every byte counts once, and all of them by the end.
func TestPutFileCounts(t *testing.T) {
	const size = 12<<20 + 12345 // 12 copy buffers, three 5 MiB parts
	src := filepath.Join(t.TempDir(), "big")
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(data)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		open func(t *testing.T) storage.Backend
	}{
		{"dir", func(t *testing.T) storage.Backend {
			d, err := storage.CreateDir(filepath.Join(t.TempDir(), "cache"))
			if err != nil {
				t.Fatal(err)
			}
			return d
		}},
		{"s3", func(t *testing.T) storage.Backend {
			b, err := storage.Open(t.Context(), s3test.Start(t).Bucket(t)+"&multipart-chunk-size=5242880")
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.open(t)
			defer b.Close()
			var mu sync.Mutex
			var done int64
			var seen []int64 // the count after each call
			count := func(n int64) {
				mu.Lock()
				done += n
				seen = append(seen, done)
				mu.Unlock()
			}
			if err := storage.PutFile(t.Context(), b, src, "nar/big.nar", count); err != nil {
				t.Fatal(err)
			}
			between := 0
			for _, n := range seen {
				if n > 0 && n < size {
					between++
				}
			}
			if done != size || between < 2 {
				t.Errorf("count heard %d bytes of %d, %d times, %d of them before the end; want all, and at least twice before", done, size, len(seen), between)
			}
			got, _, err := storage.ReadFile(t.Context(), b, "nar/big.nar", size+1)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("the file put is not the file (%v)", err)
			}
		})
	}
}
