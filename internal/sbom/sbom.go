// Package sbom describes what a bundle or cache holds as a CycloneDX 1.6
// SBOM, for the scanners a transfer board runs: one component per store
// path with its package name and version, a purl where one can be
// derived, its hashes, the URLs a source was fetched from, and the
// reference graph. It is built with CycloneDX's own Go module, and store
// paths carry the `nix:` properties the Nixpkgs manual registers
// (nix:store_path, nix:narinfo:*).
package sbom

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/package-url/packageurl-go"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/inventory"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// FileName is the SBOM's name inside a bundle (pack --sbom).
const FileName = bundle.SBOMName

// SpecVersion is the CycloneDX version written.
const SpecVersion = cdx.SpecVersion1_6

// CycloneDX returns inv as CycloneDX JSON. The same inventory gives the
// same bytes: the serial number is derived from the bundles and paths.
func CycloneDX(inv *inventory.Inventory) ([]byte, error) {
	bom := cdx.NewBOM()
	bom.SerialNumber = serial(inv)
	bom.Metadata = metadata(inv)

	targets := map[string]bool{}
	for _, b := range inv.Bundles {
		for _, t := range b.Targets {
			for _, p := range t.Outputs {
				targets[p] = true
			}
		}
	}
	var comps []cdx.Component
	var deps []cdx.Dependency
	have := map[string]bool{}
	for _, p := range inv.Paths() {
		if !p.IsDerivation() {
			have[p.Path.String()] = true
		}
	}
	for _, p := range inv.Paths() {
		if p.IsDerivation() {
			continue
		}
		comps = append(comps, component(&p, targets[p.Path.String()]))
		var on []string
		for _, r := range p.References {
			if r != p.Path && have[r.String()] {
				on = append(on, r.String())
			}
		}
		deps = append(deps, cdx.Dependency{Ref: p.Path.String(), Dependencies: &on})
	}
	// The bundle depends on its targets' outputs.
	top := slices.Sorted(func(yield func(string) bool) {
		for p := range targets {
			if have[p] && !yield(p) {
				return
			}
		}
	})
	deps = append([]cdx.Dependency{{Ref: bom.Metadata.Component.BOMRef, Dependencies: &top}}, deps...)
	bom.Components = &comps
	bom.Dependencies = &deps

	var buf bytes.Buffer
	enc := cdx.NewBOMEncoder(&buf, cdx.BOMFileFormatJSON)
	enc.SetPretty(true).SetEscapeHTML(false)
	if err := enc.EncodeVersion(bom, SpecVersion); err != nil {
		return nil, fmt.Errorf("sbom %s: %w", inv.Source, err)
	}
	return buf.Bytes(), nil
}

func metadata(inv *inventory.Inventory) *cdx.Metadata {
	md := &cdx.Metadata{}
	var created time.Time
	tools := map[string]bool{}
	var props []cdx.Property
	for _, b := range inv.Bundles {
		if b.Created.After(created) {
			created = b.Created
		}
		if b.Tool != "" {
			tools[b.Tool] = true
		}
		if b.ID != "" {
			props = append(props, cdx.Property{Name: "nix-airgap:bundle:id", Value: b.ID})
		}
		if b.Mode != "" { // a cache inventory does not record it
			props = append(props, cdx.Property{Name: "nix-airgap:bundle:mode", Value: b.Mode})
		}
		for _, t := range b.Targets {
			props = append(props, cdx.Property{Name: "nix-airgap:bundle:target", Value: t.Spec})
		}
		for _, base := range b.Bases {
			props = append(props, cdx.Property{Name: "nix-airgap:bundle:base", Value: base})
		}
	}
	if !created.IsZero() {
		md.Timestamp = created.UTC().Format(time.RFC3339)
	}
	var tc []cdx.Component
	for _, t := range slices.Sorted(func(yield func(string) bool) {
		for t := range tools {
			if !yield(t) {
				return
			}
		}
	}) {
		name, version, _ := strings.Cut(t, " ")
		tc = append(tc, cdx.Component{Type: cdx.ComponentTypeApplication, Name: name, Version: version})
	}
	if len(tc) > 0 {
		md.Tools = &cdx.ToolsChoice{Components: &tc}
	}
	kind := inv.Kind
	if kind == inventory.KindManifest {
		kind = inventory.KindBundle // a manifest describes a bundle
	}
	md.Component = &cdx.Component{BOMRef: "nix-airgap:" + kind, Type: cdx.ComponentTypeApplication, Name: "nix-airgap " + kind}
	if len(props) > 0 {
		md.Properties = &props
	}
	return md
}

func component(p *inventory.Path, target bool) cdx.Component {
	c := cdx.Component{BOMRef: p.Path.String(), Type: cdx.ComponentTypeLibrary, Name: p.Package.Name, Version: p.Package.Version}
	if target {
		c.Type = cdx.ComponentTypeApplication
	}
	source := p.IsSource()
	if source {
		c.Type, c.Name, c.Version = cdx.ComponentTypeFile, p.Path.Name, ""
	}
	var hashes []cdx.Hash
	if f := p.Flat; f != nil {
		// A flat source's hashes are the file's, as downloaded.
		hashes = []cdx.Hash{
			{Algorithm: cdx.HashAlgoMD5, Value: hex.EncodeToString(f.MD5)},
			{Algorithm: cdx.HashAlgoSHA1, Value: hex.EncodeToString(f.SHA1)},
			{Algorithm: cdx.HashAlgoSHA256, Value: hex.EncodeToString(f.SHA256)},
			{Algorithm: cdx.HashAlgoSHA512, Value: hex.EncodeToString(f.SHA512)},
		}
	} else if p.NarHash.Algo == storepath.SHA256 {
		// Otherwise the hash of the path's NAR, Nix's own serialisation.
		hashes = []cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: p.NarHash.Hex()}}
	}
	c.Hashes = &hashes
	var refs []cdx.ExternalReference
	if f := p.Fetch; f != nil {
		for _, u := range f.URLs {
			refs = append(refs, cdx.ExternalReference{URL: u, Type: cdx.ERTypeSourceDistribution})
		}
	}
	if len(refs) > 0 {
		c.ExternalReferences = &refs
	}
	c.PackageURL = purl(p, source)

	props := []cdx.Property{{Name: "nix:store_path", Value: p.Path.String()}}
	add := func(name, value string) {
		if value != "" {
			props = append(props, cdx.Property{Name: name, Value: value})
		}
	}
	add("nix:narinfo:store_path", p.Path.String())
	add("nix:narinfo:nar_hash", p.NarHash.String())
	add("nix:narinfo:nar_size", strconv.FormatUint(p.NarSize, 10))
	add("nix:narinfo:compression", p.Compression)
	if d := p.Delta; d != nil {
		// The bundle carries a binary delta, not the NAR file a narinfo
		// names: import rebuilds that from the base, so its URL and
		// file hash and size are not known here.
		add("nix-airgap:delta:base", d.Base.String())
		add("nix-airgap:delta:url", p.URL)
	} else {
		add("nix:narinfo:url", p.URL)
		add("nix:narinfo:file_hash", p.FileHash.String())
		add("nix:narinfo:file_size", strconv.FormatUint(p.FileSize, 10))
	}
	if p.Deriver != (storepath.Path{}) {
		add("nix:narinfo:deriver", p.Deriver.String())
	}
	add("nix:narinfo:ca", p.CA)
	var refNames []string
	for _, r := range p.References {
		refNames = append(refNames, r.String())
	}
	add("nix:narinfo:references", strings.Join(refNames, " "))
	add("nix-airgap:output", p.Output)
	for _, r := range p.Roles.Names() {
		add("nix-airgap:role", r)
	}
	add("nix-airgap:origin", inventory.OriginString(p.Origin))
	c.Properties = &props
	return c
}

// purl derives a package URL: a source from a known forge or registry
// gets that ecosystem's purl, a flat source another one generic purl
// with its checksum and URL, and a built package pkg:nix/NAME@VERSION (a
// type tools such as syft use, not yet in the purl registry).
func purl(p *inventory.Path, source bool) string {
	if !source {
		if p.Package.Version == "" {
			return ""
		}
		var q packageurl.Qualifiers
		if p.Output != "" && p.Output != "out" {
			q = packageurl.QualifiersFromMap(map[string]string{"output": p.Output})
		}
		return packageurl.NewPackageURL("nix", "", p.Package.Name, p.Package.Version, q, "").ToString()
	}
	if p.Fetch == nil {
		return ""
	}
	for _, u := range p.Fetch.URLs {
		if s := forgePURL(u); s != "" {
			return s
		}
	}
	if p.Flat == nil || len(p.Fetch.URLs) == 0 {
		return ""
	}
	q := packageurl.QualifiersFromMap(map[string]string{
		"checksum":     "sha256:" + hex.EncodeToString(p.Flat.SHA256),
		"download_url": p.Fetch.URLs[0],
	})
	return packageurl.NewPackageURL(packageurl.TypeGeneric, "", p.Path.Name, "", q, "").ToString()
}

// forgePURL recognises a GitHub archive or a PyPI source tarball URL.
func forgePURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	switch u.Host {
	case "github.com":
		// OWNER/REPO/archive/REF.tar.gz, or .../archive/refs/tags/REF.tar.gz
		if len(parts) >= 4 && parts[2] == "archive" {
			ref := strings.TrimSuffix(strings.TrimSuffix(parts[len(parts)-1], ".tar.gz"), ".zip")
			return packageurl.NewPackageURL(packageurl.TypeGithub, strings.ToLower(parts[0]), strings.ToLower(parts[1]), ref, nil, "").ToString()
		}
	case "files.pythonhosted.org", "pypi.io", "pypi.org":
		// packages/source/N/NAME/NAME-VERSION.tar.gz
		if len(parts) == 5 && parts[0] == "packages" && parts[1] == "source" {
			file := strings.TrimSuffix(strings.TrimSuffix(parts[4], ".tar.gz"), ".zip")
			if name, version, ok := strings.Cut(file, parts[3]+"-"); ok && name == "" {
				return packageurl.NewPackageURL(packageurl.TypePyPi, "", strings.ToLower(parts[3]), version, nil, "").ToString()
			}
		}
	}
	return ""
}

// serial is a name-based (version 5) UUID URN of the bundles' ids and the
// paths, so that the same inventory always gets the same one.
func serial(inv *inventory.Inventory) string {
	h := sha1.New()
	// The URL namespace of RFC 9562, with a name of our own.
	ns, _ := hex.DecodeString("6ba7b8119dad11d180b400c04fd430c8")
	h.Write(ns)
	h.Write([]byte("nix-airgap:"))
	for _, b := range inv.Bundles {
		h.Write([]byte(b.ID + b.Created.UTC().Format(time.RFC3339) + "\n"))
	}
	for _, p := range inv.Paths() {
		h.Write([]byte(p.Path.String() + "\n"))
	}
	u := h.Sum(nil)[:16]
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	x := hex.EncodeToString(u)
	return "urn:uuid:" + x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}
