package bundle

import (
	"context"
	"io"
)

// A bundle is read as one pipeline:
//
//	source ──files──▶ checker ──checked bytes──▶ sink
//
// A source (source_dir.go, source_tar.go) yields the bundle's files in
// its own order; the checker (check.go) reads each file once as it passes,
// hashing it (and decompressing a NAR file when deep), hands its bytes to
// the sink (sink.go), and once the source is done accounts for every file
// against the signed manifest. Verify's sink keeps nothing; Import's
// stages the files and publishes them into the cache only when the whole
// bundle verified.

// A source yields the files of a bundle.
type source interface {
	// files passes every file to r, possibly from several goroutines at
	// once, and reports problems with its own structure (a damaged
	// stream, a name no bundle has) to r. Its error is r's, or a failure
	// that is not the bundle's (ctx ended).
	files(ctx context.Context, r receiver) (ending, error)
	// absent is how a problem says that a file is not there.
	absent() string
}

// opener is a source whose files can be read by name, before the others:
// the checker then reads the manifest first and stops early when it is
// not trusted, and knows each NAR file's compression before reading it.
type opener interface {
	open(name string) (io.ReadCloser, error)
}

// pender is a receiver told, before any file, which of the bundle's
// files a volume source cannot yield whole (pending): the paths that
// need them wait for other volumes.
type pender interface {
	pendingFiles(pending map[string]bool)
}

// manifestless is an opener that can say why it has no manifest to give
// (volumes cut short before it): problems to report in place of "not a
// bundle".
type manifestless interface {
	noManifest() []Problem
}

// receiver takes a source's files: the checker, or ReadTar's callback.
type receiver interface {
	// file takes one file. A *readError says reading it failed (the
	// source reports it as it must); any other error stops the source.
	file(f *file) error
	problem(name string, kind Kind, format string, args ...any)
}

// file is one file a source yields.
type file struct {
	name string
	// size is the file's size when the source knows it before reading,
	// else -1.
	size int64
	// open opens the file's content; it is only valid until the
	// receiver's file method returns.
	open func() (io.ReadCloser, error)
	// notRegular, if not "", says what else the file is (a symlink, a
	// device): never read.
	notRegular string
	// origin, if not "", is where the file came from, for problems: the
	// volume (or volumes) of a set that held it.
	origin string
	// piece marks a piece of a file split across volumes, which the
	// source checks as it passes: import keeps it until the rest comes.
	piece bool
}

// ending is how a source's files ended, when that says something about the
// bundle: a stream can end early.
type ending struct {
	// cut reports a stream cut short in a file or a header; the source
	// has said where.
	cut bool
	// unterminated names the last file of a stream that ended without
	// tar's end-of-archive marker, whole files only: it may have been
	// cut at a file's end.
	unterminated string
	// notTar reports a stream that is not a tar at all: nothing more is
	// worth saying of it.
	notTar bool
	// pending are the bundle's files a volume source does not have whole
	// (in volumes not given): not missing, but not there yet.
	pending map[string]bool
	// volumes is what a volume source was given of its set.
	volumes *VolumeReport
	// stop says the source found problems (volumes of another set, say)
	// that leave nothing to account for.
	stop bool
}

// readError is a failure to read a file: the medium's, or a stream cut
// short.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }
