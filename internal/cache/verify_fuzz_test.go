package cache

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// fuzzCodecs are the compressions FuzzReadNARFile picks from by number.
var fuzzCodecs = []string{compression.None, compression.Zstd, compression.XZ, compression.Gzip, compression.Bzip2, "br"}

// FuzzReadNARFile reads arbitrary files as compressed NARs: it must never
// panic, must hash and copy exactly the bytes it read, stop at MaxSize,
// and hash the NAR the codec gives.
func FuzzReadNARFile(f *testing.F) {
	nar := testNAR(f, "fuzz me\n")
	for i, comp := range fuzzCodecs[:4] { // bzip2 is read only
		var buf bytes.Buffer
		w, err := compression.NewWriter(&buf, comp, compression.WriterOptions{})
		if err != nil {
			f.Fatal(err)
		}
		w.Write(nar)
		w.Close()
		f.Add(uint8(i), true, uint16(0), buf.Bytes())
	}
	f.Add(uint8(1), true, uint16(3), []byte("not zstd at all"))
	f.Fuzz(func(t *testing.T, codec uint8, deep bool, maxSize uint16, data []byte) {
		comp := fuzzCodecs[int(codec)%len(fuzzCodecs)]
		var copied bytes.Buffer
		st, err := ReadNARFile(bytes.NewReader(data), NARFileOptions{Compression: comp, Deep: deep, MaxSize: uint64(maxSize), Copy: &copied})
		if err != nil {
			t.Fatalf("ReadNARFile of an in-memory file: %v", err)
		}
		read := data
		if maxSize > 0 && len(data) > int(maxSize) {
			read = data[:int(maxSize)+1]
			if !st.TooLong {
				t.Fatalf("%d bytes past MaxSize %d, not TooLong", len(data), maxSize)
			}
		} else if st.TooLong {
			t.Fatalf("%d bytes, MaxSize %d: TooLong", len(data), maxSize)
		}
		sum := sha256.Sum256(read)
		if st.FileSize != uint64(len(read)) || !st.FileHash.Equal(storepath.Hash{Algo: storepath.SHA256, Digest: sum[:]}) || !bytes.Equal(copied.Bytes(), read) {
			t.Fatalf("measured %d bytes %s, copied %d; read %d", st.FileSize, st.FileHash, copied.Len(), len(read))
		}
		if !deep || st.DecodeErr != nil || st.TooLong {
			return
		}
		dr, err := compression.NewReader(bytes.NewReader(data), comp)
		if err != nil {
			t.Fatalf("ReadNARFile decoded what NewReader refuses: %v", err)
		}
		defer dr.Close()
		out, err := io.ReadAll(dr)
		want := sha256.Sum256(out)
		if err != nil || st.NarSize != uint64(len(out)) || !bytes.Equal(st.NarHash.Digest, want[:]) {
			t.Fatalf("NAR %d bytes %s; decoding again gives %d bytes, %v", st.NarSize, st.NarHash, len(out), err)
		}
	})
}
