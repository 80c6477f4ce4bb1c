package bundle

import (
	"crypto/sha256"
	"fmt"
	"path"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// The layout of a bundle and of a long-lived cache (docs/bundle-format.md
// §1 and §6): a binary cache, whose own names cache's layout.go makes,
// plus the files named here.

// MaxManifestSize caps manifest.json. A path's entry is under 1 KiB with
// a few references; 256 MiB leaves room for hundreds of thousands of
// paths while refusing input meant to exhaust memory.
const MaxManifestSize = 256 << 20

// The files every bundle has besides its narinfos and NAR files.
const (
	ManifestName = "manifest.json"
	SigName      = "manifest.json.sig"
	CacheInfo    = cache.CacheInfoFile
	RegistryName = "flake-registry.json"
)

// SBOMName is pack --sbom's SBOM of a bundle (docs/bundle-format.md
// §1.4). It describes the bundle, whose signature covers it: import
// leaves it there, as the cache's record keeps the manifest that lists
// it.
const SBOMName = "sbom.cdx.json"

// recordRoot is nix-airgap's own directory in a long-lived cache; a
// bundle has none.
const recordRoot = "nix-airgap"

// RecordDir is where a cache keeps the manifests of the bundles imported
// into it.
const RecordDir = recordRoot + "/bundles"

// maxCacheInfo caps nix-cache-info: three short lines.
const maxCacheInfo = 64 << 10

// ID is a bundle's id: the sha256 of its manifest.json's exact bytes.
// Its String is "sha256:NIX32".
func ID(data []byte) storepath.Hash {
	sum := sha256.Sum256(data)
	return storepath.Hash{Algo: storepath.SHA256, Digest: sum[:]}
}

// RecordName is the base name of a bundle's record in a cache,
// nix-airgap/bundles/RecordName(id): the id with ':' replaced by '-',
// plus ".json".
func RecordName(id storepath.Hash) string {
	return strings.ReplaceAll(id.String(), ":", "-") + ".json"
}

// setName names what a cache keeps of a half-imported volume set with
// id: RecordName without ".json". setID reads the id back.
func setName(id storepath.Hash) string { return strings.TrimSuffix(RecordName(id), ".json") }

func setID(name string) string { return strings.Replace(name, "-", ":", 1) }

// checkURL checks a narinfo URL as a bundle allows it: "nar/NAME" with
// NAME a plain file name.
func checkURL(url string) error {
	name, ok := cache.NarFileName(url)
	if !ok || name == "" || strings.ContainsAny(name, "/\\\x00") || name == "." || name == ".." || strings.HasPrefix(name, ".") {
		return fmt.Errorf("url %q: want nar/NAME", url)
	}
	return nil
}

// checkFileName checks a files[] name: a clean relative slash path that
// names no other kind of bundle file.
func checkFileName(name string) error {
	if name == "" || path.IsAbs(name) || path.Clean(name) != name || strings.ContainsAny(name, "\\\x00") {
		return fmt.Errorf("name %q: want a clean relative path", name)
	}
	for _, part := range strings.Split(name, "/") {
		if strings.HasPrefix(part, ".") {
			return fmt.Errorf("name %q: starts with a dot", name)
		}
	}
	if _, isNarInfo := cache.NarInfoHashPart(name); isNarInfo || name == ManifestName || name == SigName || name == CacheInfo ||
		strings.HasPrefix(name, cache.NarDir+"/") {
		return fmt.Errorf("name %q: reserved for cache files", name)
	}
	if pieceNameRE.MatchString(name) {
		return fmt.Errorf("name %q: reserved for pieces of files split across volumes", name)
	}
	return nil
}

// isNARFile tells a name in the NAR directory, nar/NAME.
func isNARFile(name string) bool {
	n, ok := cache.NarFileName(name)
	return ok && n != "" && !strings.Contains(n, "/")
}

// compressionOf names the compression Nix's file name extension implies.
func compressionOf(name string) string {
	for _, comp := range []string{compression.Zstd, compression.XZ, compression.Bzip2, compression.Gzip} {
		if ext, err := compression.Ext(comp); err == nil && strings.HasSuffix(name, ".nar"+ext) {
			return comp
		}
	}
	if strings.HasSuffix(name, ".nar") {
		return compression.None
	}
	return ""
}
