package cache

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// VerifyFile returns a reader of r that checks the compressed file against
// ni's FileSize (when not 0) and FileHash (when set). On a mismatch it
// returns an error wrapping ErrCorrupt, naming ni.URL, instead of io.EOF,
// and it fails as soon as r runs past FileSize.
func VerifyFile(r io.Reader, ni *narinfo.NarInfo) io.Reader {
	v := &fileVerifier{r: r, ni: ni}
	if !ni.FileHash.IsZero() {
		v.h = ni.FileHash.Algo.New()
	}
	return v
}

type fileVerifier struct {
	r   io.Reader
	ni  *narinfo.NarInfo
	h   hash.Hash
	n   uint64
	err error // sticky
	// srcErr is a read error from r other than io.EOF: not corruption.
	srcErr error
}

func (v *fileVerifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.n += uint64(n)
	if v.h != nil {
		v.h.Write(p[:n])
	}
	switch {
	case v.ni.FileSize != 0 && v.n > v.ni.FileSize:
		v.err = fmt.Errorf("file %s of %s: longer than FileSize %d: %w", v.ni.URL, v.ni.StorePath, v.ni.FileSize, ErrCorrupt)
		return 0, v.err
	case err == io.EOF:
		v.err = v.check()
		if v.err == nil {
			v.err = io.EOF
		}
		return n, v.err
	case err != nil:
		v.err, v.srcErr = err, err
	}
	return n, err
}

func (v *fileVerifier) check() error {
	ni := v.ni
	if ni.FileSize != 0 && v.n != ni.FileSize {
		return fmt.Errorf("file %s of %s: %d bytes, narinfo says FileSize %d: %w", ni.URL, ni.StorePath, v.n, ni.FileSize, ErrCorrupt)
	}
	if v.h != nil {
		got, _ := storepath.NewHash(ni.FileHash.Algo, v.h.Sum(nil))
		if !got.Equal(ni.FileHash) {
			return fmt.Errorf("file %s of %s: hash %s, narinfo says FileHash %s: %w", ni.URL, ni.StorePath, got, ni.FileHash, ErrCorrupt)
		}
	}
	return nil
}

// CheckNAR reads a compressed NAR file to its end, checking FileSize and
// FileHash (when set) and, decompressing as it goes, NarSize and NarHash.
// A mismatch or undecodable data gives an error wrapping ErrCorrupt that
// names the file; a read error from compressed is returned as it is.
func CheckNAR(compressed io.Reader, ni *narinfo.NarInfo) error {
	v := VerifyFile(compressed, ni).(*fileVerifier)
	if err := checkDecompressed(v, ni); err != nil {
		if v.srcErr != nil {
			return fmt.Errorf("read %s of %s: %w", ni.URL, ni.StorePath, v.srcErr)
		}
		var fe error
		if v.err != nil && v.err != io.EOF {
			fe = v.err // the file check explains it better
		}
		if fe != nil {
			return fe
		}
		return err
	}
	if v.err != io.EOF {
		return v.err
	}
	return nil
}

// checkDecompressed decompresses r with ni.Compression, checks NarSize and
// NarHash, and reads r to its end so that a verifier under it sees EOF.
func checkDecompressed(r io.Reader, ni *narinfo.NarInfo) error {
	dr, err := compression.NewReader(r, ni.Compression)
	if err != nil {
		if errors.Is(err, compression.ErrUnsupported) {
			return fmt.Errorf("file %s of %s: %w", ni.URL, ni.StorePath, err)
		}
		return fmt.Errorf("file %s of %s: decompress %s: %v: %w", ni.URL, ni.StorePath, ni.Compression, err, ErrCorrupt)
	}
	hw := nar.NewHashWriter(io.Discard)
	_, err = io.CopyBuffer(hw, dr, make([]byte, copyBufSize))
	dr.Close()
	if err != nil {
		// Read on to the end, so that a FileHash check under r can say
		// what is wrong with the file: that explains more than the
		// decoder's complaint.
		io.Copy(io.Discard, r)
		return fmt.Errorf("file %s of %s: decompress %s: %v: %w", ni.URL, ni.StorePath, ni.Compression, err, ErrCorrupt)
	}
	if _, err := io.CopyBuffer(io.Discard, r, make([]byte, 64<<10)); err != nil {
		return fmt.Errorf("file %s of %s: %w", ni.URL, ni.StorePath, err)
	}
	if uint64(hw.Size()) != ni.NarSize {
		return fmt.Errorf("file %s of %s: NAR has %d bytes, narinfo says NarSize %d: %w", ni.URL, ni.StorePath, hw.Size(), ni.NarSize, ErrCorrupt)
	}
	if got := hw.Sum(); !got.Equal(ni.NarHash) {
		return fmt.Errorf("file %s of %s: NAR hash %s, narinfo says NarHash %s: %w", ni.URL, ni.StorePath, got, ni.NarHash, ErrCorrupt)
	}
	return nil
}

// CopyVerified stores the compressed NAR file src reads verbatim in d, as
// AddFile does, while checking it against ni: FileSize and FileHash on the
// bytes, and NarSize and NarHash by decompressing in a parallel goroutine.
// On any mismatch it returns an error wrapping ErrCorrupt and stores
// nothing. The returned File's URL is where d keeps it, which is the name
// Nix gives such a file; set ni.URL to it before PutNarInfo.
func (d *Dir) CopyVerified(ctx context.Context, src io.Reader, ni *narinfo.NarInfo) (File, error) {
	ext, err := compression.Ext(ni.Compression)
	if err != nil {
		return File{}, fmt.Errorf("copy %s of %s: %w", ni.URL, ni.StorePath, err)
	}
	return d.store(ctx, ext, func(w io.Writer) error {
		pr, pw := io.Pipe()
		narErr := make(chan error, 1)
		go func() {
			err := checkDecompressed(pr, ni)
			pr.CloseWithError(fmt.Errorf("NAR check stopped: %w", err))
			narErr <- err
		}()
		v := VerifyFile(ctxReader{ctx, src}, ni).(*fileVerifier)
		_, err := io.CopyBuffer(io.MultiWriter(w, pw), v, make([]byte, copyBufSize))
		pw.CloseWithError(err)
		nerr := <-narErr
		switch {
		case v.srcErr != nil:
			return fmt.Errorf("read %s of %s: %w", ni.URL, ni.StorePath, v.srcErr)
		case v.err != nil && v.err != io.EOF:
			return v.err
		case err != nil && !errors.Is(err, io.ErrClosedPipe) && nerr == nil:
			return err
		}
		return nerr
	})
}
