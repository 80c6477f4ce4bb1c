package nar

import (
	"fmt"
	"io"
)

// OpenFile reads the start of a NAR whose root is a single regular file (as
// a flat fixed-output path is stored) and returns a reader of that file's
// contents and its size. After the last byte, the reader checks the rest of
// the NAR and reports io.EOF only if it is well formed. A NAR with another
// root gives ErrNotRegular.
func OpenFile(r io.Reader) (io.Reader, int64, error) {
	nr := NewReader(r)
	hdr, err := nr.Next()
	if err != nil {
		return nil, 0, fmt.Errorf("open nar file: %w", err)
	}
	if hdr.Type != TypeRegular {
		return nil, 0, fmt.Errorf("open nar file: root is a %s: %w", hdr.Type, ErrNotRegular)
	}
	return &fileReader{nr: nr}, hdr.Size, nil
}

type fileReader struct {
	nr   *Reader
	done error
}

func (f *fileReader) Read(p []byte) (int, error) {
	if f.done != nil {
		return 0, f.done
	}
	n, err := f.nr.Read(p)
	if err == io.EOF {
		if _, err = f.nr.Next(); err == nil {
			err = fmt.Errorf("open nar file: object after the root file: %w", ErrInvalid)
		} else if err != io.EOF {
			err = fmt.Errorf("open nar file: %w", err)
		}
		f.done = err
	}
	return n, err
}
