package bundle

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Kind classifies a Problem.
type Kind int

// The kinds of problem, each with its sentinel error.
const (
	KindUntrusted  Kind = iota + 1 // ErrUntrusted
	KindCorrupt                    // ErrCorrupt
	KindMissing                    // ErrMissing
	KindUnexpected                 // ErrUnexpected, and ErrCorrupt
	KindUnreadable                 // ErrUnreadable
)

func (k Kind) String() string {
	switch k {
	case KindUntrusted:
		return "untrusted"
	case KindCorrupt:
		return "corrupt"
	case KindMissing:
		return "missing"
	case KindUnexpected:
		return "unexpected"
	case KindUnreadable:
		return "unreadable"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// MarshalText writes the kind's name, for --json.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Problem is one thing wrong with one file of a bundle.
type Problem struct {
	// File is the file's name relative to the bundle ("nar/….nar.zst",
	// "manifest.json.sig").
	File    string `json:"file"`
	Kind    Kind   `json:"kind"`
	Problem string `json:"problem"`
	// Paths are the store paths the problem damages, in a long-lived
	// cache: a narinfo's path, or every path whose narinfo names a
	// damaged NAR file.
	Paths []string `json:"paths,omitempty"`
	// BadSignature marks an untrusted file whose every signer is
	// trusted by name, and whose signatures do not match
	// (ErrBadSignature).
	BadSignature bool `json:"-"`
	// KeyNotGiven marks an untrusted narinfo of a long-lived cache whose
	// every signer signed bundle records there that no given key trusts:
	// a packing key not given (one rotated out, say), not damage.
	KeyNotGiven bool `json:"-"`
}

// SignerUntrusted reports whether some problem is a signer no given key
// trusts, which the right --public-key would mend, rather than a
// trusted key's signature that does not match.
func SignerUntrusted(problems []Problem) bool {
	return slices.ContainsFunc(problems, func(p Problem) bool { return p.Kind == KindUntrusted && !p.BadSignature })
}

func (p Problem) String() string { return p.File + ": " + p.Problem }

// Report is what Verify found.
type Report struct {
	Source string `json:"source"`
	// ID is the bundle id; zero when manifest.json could not be read.
	ID storepath.Hash `json:"-"`
	// Manifest is the parsed manifest.json, nil when it did not parse;
	// Import's has no Targets.
	Manifest *Manifest `json:"-"`
	// Signer names the trusted key that signed the manifest, "" when
	// unsigned input was allowed; for a cache, every key that signed one
	// of its bundle records, separated by ", ".
	Signer string `json:"signer"`
	// Paths and Files count what was checked; Bytes is what was read.
	// When the store stopped answering, they count only what it gave.
	Paths int   `json:"paths"`
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// Rebuilt counts the NARs rebuilt from binary deltas and checked.
	Rebuilt int `json:"rebuilt"`
	// InCache counts the binary deltas not rebuilt because a cache the
	// bundle was checked against holds the NAR they make: only their
	// files were checked, against the manifest.
	InCache int `json:"inCache,omitempty"`
	// DeltaBases counts the store paths binary deltas are made against
	// that the bundle does not carry, when no cache was there to check
	// them in: import needs them in its cache, and a warning names one.
	DeltaBases int              `json:"deltaBases,omitempty"`
	Elapsed    progress.Seconds `json:"seconds"`
	Problems   []Problem        `json:"problems"`
	// Warnings are findings that do not fail verification, such as an
	// unsigned bundle accepted with AllowUnsigned.
	Warnings []string `json:"warnings"`
	// AcceptedUnsigned reports that a manifest or bundle record without
	// a trusted signature was accepted (AllowUnsigned); a warning says
	// which.
	AcceptedUnsigned bool `json:"acceptedUnsigned,omitempty"`
	// Damaged lists, for a long-lived cache, every store path some
	// problem damages, sorted; Repair says how to mend them.
	Damaged []string `json:"damaged,omitempty"`
	Repair  *Repair  `json:"repair,omitempty"`
	// Volumes says, for a volume set, which volumes were given and
	// which are missing; nil for a bundle in one piece.
	Volumes *VolumeReport `json:"volumes,omitempty"`
	// Held counts the paths of a volume set that wait for volumes not
	// given: their files are not whole yet, or they refer to such paths.
	Held int `json:"held,omitempty"`
	// Coverage says, for a volume set verified without every file whole
	// in the volumes given, how much of its paths and other files they
	// hold, and so was checked; nil otherwise. Paths and Files still
	// count the manifest's, each checked against it as far as it goes.
	Coverage *Coverage `json:"coverage,omitempty"`
	// Stopped says why the check ended early, when the store stopped
	// answering (VerifyError.Down): StoreDownNote and the error; ""
	// when the check ran to its end.
	Stopped string `json:"stopped,omitempty"`
}

// Coverage counts the store paths (and the other files) of a volume set
// whose files the volumes given hold whole (Whole), hold some files or
// pieces of (Part), or hold nothing of (Absent): the other volumes hold
// the rest.
type Coverage struct {
	WholePaths  int `json:"wholePaths"`
	PartPaths   int `json:"partPaths"`
	AbsentPaths int `json:"absentPaths"`
	WholeFiles  int `json:"wholeFiles"`
	PartFiles   int `json:"partFiles"`
	AbsentFiles int `json:"absentFiles"`
}

// Repair says how to mend a cache's damaged paths: import a bundle that
// carries them again with --repair (Command). Bundles lists the imported
// bundles whose records say they carried some of them.
type Repair struct {
	Command string      `json:"command"`
	Bundles []RepairRef `json:"bundles"`
}

// RepairRef is an imported bundle that carried damaged paths.
type RepairRef struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Targets []string  `json:"targets"`
	// Paths counts the damaged paths it carried.
	Paths int `json:"paths"`
	// Volumes is the number of volumes of a volume set, which a repair
	// needs all at once; 0 for a bundle in one piece.
	Volumes int `json:"volumes,omitempty"`
}

// OK reports whether the bundle verified.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// VerifyError is a bundle that failed verification: every problem found.
// errors.Is matches the sentinel of each kind of problem in it.
type VerifyError struct {
	Source   string
	Problems []Problem
	// Down is why the store stopped answering (storage.ErrUnavailable)
	// partway: what it did not give is unchecked, not damaged.
	Down     error
	unsigned bool // the untrusted manifest had no signature at all
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verify %s: ", e.Source)
	if len(e.Problems) > 1 {
		fmt.Fprintf(&b, "%d problems: ", len(e.Problems))
	}
	const shown = 10
	for i, p := range e.Problems {
		if i == shown {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-shown)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	if e.Down != nil {
		if len(e.Problems) > 0 {
			b.WriteString("; then ")
		}
		fmt.Fprintf(&b, "%s: %v", StoreDownNote, e.Down)
	}
	return b.String()
}

// StoreDownNote says what a store that stopped answering means for a check.
const StoreDownNote = "the store stopped answering, so what it did not give was not checked and nothing was found damaged for that; try again later"

// Unwrap returns the sentinels of the kinds of problem found.
func (e *VerifyError) Unwrap() []error {
	var errs []error
	add := func(err error) {
		if !slices.Contains(errs, err) {
			errs = append(errs, err)
		}
	}
	if e.unsigned {
		add(ErrUnsigned)
	}
	if e.Down != nil {
		add(e.Down)
	}
	for _, p := range e.Problems {
		switch p.Kind {
		case KindUntrusted:
			add(ErrUntrusted)
		case KindCorrupt:
			add(ErrCorrupt)
		case KindMissing:
			add(ErrMissing)
		case KindUnexpected:
			add(ErrUnexpected)
			add(ErrCorrupt)
		case KindUnreadable:
			add(ErrUnreadable)
		}
	}
	return errs
}
