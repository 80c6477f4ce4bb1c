package cache

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
)

// benchNARSize is the NAR size the benchmarks use; NARBENCH_MIB overrides
// it (in MiB).
func benchNARSize(b *testing.B) int64 {
	if s := os.Getenv("NARBENCH_MIB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		return int64(n) << 20
	}
	return 256 << 20
}

// realisticNAR writes a NAR of about size bytes to a temp file: a flat
// directory of the files under /usr/lib and /usr/bin (shared libraries,
// executables, data), the mix a store path's NAR holds.
func realisticNAR(b *testing.B, size int64) string {
	b.Helper()
	// NARBENCH_OUT keeps the NAR, to compare with nix copy on the same
	// content (nix-store --restore DIR < NAR; nix-store --add DIR).
	out := os.Getenv("NARBENCH_OUT")
	if out == "" {
		out = filepath.Join(b.TempDir(), "bench.nar")
	}
	f, err := os.Create(out)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w := nar.NewWriter(f)
	if err := w.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeDirectory}); err != nil {
		b.Fatal(err)
	}
	var total int64
	i := 0
	for _, root := range []string{"/usr/lib", "/usr/bin"} {
		filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() || total >= size {
				return nil
			}
			info, err := e.Info()
			if err != nil || info.Size() == 0 {
				return nil
			}
			n := min(info.Size(), size-total)
			src, err := os.Open(p)
			if err != nil {
				return nil
			}
			defer src.Close()
			i++
			if err := w.WriteHeader(&nar.Header{Path: fmt.Sprintf("/f%07d", i), Type: nar.TypeRegular, Size: n, Executable: info.Mode()&0o111 != 0}); err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyN(w, src, n); err != nil {
				b.Fatal(err)
			}
			total += n
			if total >= size {
				return fs.SkipAll
			}
			return nil
		})
	}
	if total < size {
		b.Skipf("only %d bytes of files under /usr", total)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkAddNAR measures pack's local path: NAR in, compressed, hashed
// twice and written durably. Run with -cpu 2 to match the target machine.
func BenchmarkAddNAR(b *testing.B) {
	narFile := realisticNAR(b, benchNARSize(b))
	st, _ := os.Stat(narFile)
	for _, comp := range []string{"zstd", "none"} {
		b.Run(comp, func(b *testing.B) {
			d, err := CreateDir(b.TempDir(), testStore, 40)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(st.Size())
			var f File
			for b.Loop() {
				r, err := os.Open(narFile)
				if err != nil {
					b.Fatal(err)
				}
				f, _, err = d.AddNAR(context.Background(), r, comp, compression.WriterOptions{}, NarStats{})
				r.Close()
				if err != nil {
					b.Fatal(err)
				}
				os.Remove(filepath.Join(d.String(), f.URL))
			}
			b.ReportMetric(float64(f.Size)/float64(st.Size()), "ratio")
		})
	}
}

// BenchmarkCheckNAR measures verify's path: a zstd file read, hashed,
// decompressed and the NAR hashed.
func BenchmarkCheckNAR(b *testing.B) {
	narFile := realisticNAR(b, benchNARSize(b))
	d, err := CreateDir(b.TempDir(), testStore, 40)
	if err != nil {
		b.Fatal(err)
	}
	r, _ := os.Open(narFile)
	f, st, err := d.AddNAR(context.Background(), r, "zstd", compression.WriterOptions{}, NarStats{})
	r.Close()
	if err != nil {
		b.Fatal(err)
	}
	ni := &narinfo.NarInfo{URL: f.URL, Compression: "zstd", FileHash: f.Hash, FileSize: uint64(f.Size), NarHash: st.NarHash, NarSize: uint64(st.NarSize)}
	b.SetBytes(st.NarSize)
	for b.Loop() {
		file, err := d.Open(context.Background(), f.URL)
		if err != nil {
			b.Fatal(err)
		}
		err = CheckNAR(file, ni)
		file.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
}
