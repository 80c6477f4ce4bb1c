package cache

import (
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// The layout of a binary cache, as Nix reads one over HTTP or file://
// (docs/bundle-format.md §1): every name the code uses for a cache's files
// is made here.
//
//	nix-cache-info
//	HASHPART.narinfo      one per store path
//	HASHPART.ls           optional: the NAR's listing (write-nar-listing)
//	nar/FILEHASH.nar.EXT  the compressed NAR files narinfos name
//	log/DRVBASE           build logs
const (
	// CacheInfoFile is the name of a binary cache's header file.
	CacheInfoFile = "nix-cache-info"
	// NarDir holds the NAR files.
	NarDir = "nar"
	// LogDir holds build logs.
	LogDir = "log"
)

const (
	narInfoExt = ".narinfo"
	listingExt = ".ls"
)

// ListingFile is the name of the NAR listing of the store path whose hash
// part is hashPart.
func ListingFile(hashPart string) string { return hashPart + listingExt }

// ListingHashPart returns the hash part in a NAR listing's name, and
// whether name is one: a top-level name ending in .ls. The hash part is
// not checked.
func ListingHashPart(name string) (string, bool) {
	if strings.Contains(name, "/") {
		return "", false
	}
	return strings.CutSuffix(name, listingExt)
}

// The media types of a cache's files, as Nix gives them when it uploads
// them (to a bucket) and as serve answers them.
const (
	CacheInfoType = "text/x-nix-cache-info"
	NarInfoType   = "text/x-nix-narinfo"
	NarType       = "application/x-nix-nar"
	ListingType   = "application/json"
	LogType       = "text/plain; charset=utf-8"
)

// ContentType is the media type of the file name in a cache: for
// storage.S3, which sits below this package and gives each upload one
// (S3.SetContentType). Other JSON files (nix-airgap's records) are
// application/json, anything else application/octet-stream.
func ContentType(name string) string {
	_, narInfo := NarInfoHashPart(name)
	_, listing := ListingHashPart(name)
	switch {
	case name == CacheInfoFile:
		return CacheInfoType
	case narInfo:
		return NarInfoType
	case listing:
		return ListingType
	case strings.HasPrefix(name, NarDir+"/"):
		return NarType
	case strings.HasPrefix(name, LogDir+"/"):
		return LogType
	case strings.HasSuffix(name, ".json"):
		return "application/json"
	}
	return "application/octet-stream"
}

// RemovalGrace is how long a NAR file outlives the narinfo that named it
// when gc removes both. A server goes on answering a narinfo it checked
// against its file for less than this (serve checks at least twice
// within it), and a client that got the narinfo just before can still
// fetch the NAR: no narinfo is ever served without its NAR.
const RemovalGrace = 2 * time.Second

// NarInfoFile is the name of the narinfo of the store path whose hash part
// is hashPart.
func NarInfoFile(hashPart string) string { return hashPart + narInfoExt }

// NarInfoHashPart returns the hash part in a narinfo's name, and whether
// name is one: a top-level name ending in .narinfo. The hash part is not
// checked (storepath.IsHashPart does that).
func NarInfoHashPart(name string) (string, bool) {
	if strings.Contains(name, "/") {
		return "", false
	}
	return strings.CutSuffix(name, narInfoExt)
}

// NarURL is where a cache keeps a NAR file, as Nix names it:
// nar/NIX32(sha256 of the file).nar plus the compression's extension
// (".zst", or "" for none).
func NarURL(fileHash storepath.Hash, ext string) string {
	return NarDir + "/" + fileHash.Nix32() + ".nar" + ext
}

// NarFileName returns NAME for a URL of the form nar/NAME, and whether url
// has that form. NAME is not checked.
func NarFileName(url string) (string, bool) {
	return strings.CutPrefix(url, NarDir+"/")
}
