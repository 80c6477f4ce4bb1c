package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// The JSON shapes, fields in the spec's order: encoding/json writes
// struct fields in declaration order.
type (
	jsonManifest struct {
		Format      string        `json:"format"`
		Version     int           `json:"version"`
		Tool        string        `json:"tool"`
		Created     string        `json:"created"`
		StoreDir    string        `json:"storeDir"`
		Mode        string        `json:"mode"`
		Derivations bool          `json:"derivations"`
		Targets     []jsonTarget  `json:"targets"`
		Bases       []jsonBase    `json:"bases"`
		Paths       []jsonPath    `json:"paths"`
		Files       []jsonFile    `json:"files"`
		Channels    []jsonChannel `json:"channels,omitempty"`
		VolumeSize  int64         `json:"volumeSize,omitempty"`
		Volumes     []jsonVolume  `json:"volumes,omitempty"`
	}
	jsonChannel struct {
		Name   string `json:"name"`
		Source string `json:"source"`
	}
	jsonTarget struct {
		Spec    string            `json:"spec"`
		DrvPath string            `json:"drvPath"`
		Outputs map[string]string `json:"outputs"`
	}
	jsonBase struct {
		ID       string    `json:"id"`
		Created  string    `json:"created"`
		Paths    int       `json:"paths"`
		Kind     string    `json:"kind,omitempty"`     // BaseBundle or BaseInventory
		Provides *[]string `json:"provides,omitempty"` // nil: written before provides
		Channels []string  `json:"channels,omitempty"`
	}
	jsonPath struct {
		Path        string    `json:"path"`
		NarHash     string    `json:"narHash"`
		NarSize     uint64    `json:"narSize"`
		URL         string    `json:"url"`
		FileHash    string    `json:"fileHash"`
		FileSize    uint64    `json:"fileSize"`
		Compression string    `json:"compression"`
		References  []string  `json:"references"`
		Deriver     string    `json:"deriver"`
		CA          string    `json:"ca"`
		Roles       []string  `json:"roles"`
		Flat        *jsonFlat `json:"flat,omitempty"`
		jsonProvenance
		Delta *jsonDelta `json:"delta,omitempty"`
	}
	jsonFlat struct {
		MD5    string `json:"md5"`
		SHA1   string `json:"sha1"`
		SHA256 string `json:"sha256"`
		SHA512 string `json:"sha512"`
	}
	jsonFile struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	}
)

// fromJSON checks j and converts it; errors name the field at fault.
// The targets and paths are ts's and ps's.
func fromJSON(j *jsonManifest, ts *targetList, ps *pathList) (*Manifest, error) {
	dir, err := storepath.ParseDir(j.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("storeDir: %w", err)
	}
	created, err := parseTime(j.Created)
	if err != nil {
		return nil, fmt.Errorf("created: %w", err)
	}
	m := &Manifest{
		Format:      j.Format,
		Version:     j.Version,
		Tool:        j.Tool,
		Created:     created,
		StoreDir:    dir,
		Derivations: j.Derivations,
	}
	if m.Mode, err = role.ParseMode(j.Mode); err != nil {
		return nil, err
	}
	if m.Targets, err = ts.ts, ts.err; err != nil {
		return nil, err
	}
	if m.Bases, err = basesFromJSON(dir, j.Bases); err != nil {
		return nil, err
	}
	if m.Paths, err = ps.ps, ps.err; err != nil {
		return nil, err
	}
	files, names, err := filesFromJSON(j.Files)
	if err != nil {
		return nil, err
	}
	m.Files = files
	if err := channelsFromJSON(m, j.Channels, names); err != nil {
		return nil, err
	}
	if len(j.Volumes) > 0 || j.VolumeSize != 0 {
		if j.Version < VolumesVersion {
			return nil, fmt.Errorf("volumes in a version %d manifest; a volume set's is version %d", j.Version, VolumesVersion)
		}
		if err := volumesFromJSON(m, j.VolumeSize, j.Volumes); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// targetList collects a manifest's targets as they are decoded, or only
// checks them unless keep.
type targetList struct {
	dir  storepath.Dir // "" when storeDir is bad: fromJSON says so first
	keep bool
	ts   []Target
	err  error
}

func (l *targetList) reset() { l.ts, l.err = nil, nil }

func (l *targetList) add(i int, jt *jsonTarget) {
	if l.dir == "" || l.err != nil {
		return
	}
	t := Target{Spec: jt.Spec, Outputs: map[string]storepath.Path{}}
	var err error
	if jt.DrvPath != "" {
		if t.DrvPath, err = l.dir.Parse(jt.DrvPath); err != nil {
			l.err = fmt.Errorf("targets[%d].drvPath: %w", i, err)
			return
		}
	}
	for name, p := range jt.Outputs {
		if t.Outputs[name], err = l.dir.Parse(p); err != nil {
			l.err = fmt.Errorf("targets[%d].outputs.%s: %w", i, name, err)
			return
		}
	}
	if l.keep {
		l.ts = append(l.ts, t)
	}
}

func basesFromJSON(dir storepath.Dir, jbs []jsonBase) ([]Base, error) {
	var bs []Base
	for i, jb := range jbs {
		b := Base{Paths: jb.Paths, Kind: jb.Kind} // information: any other kind reads as unknown
		var err error
		if b.ID, err = parseSHA256(jb.ID); err != nil {
			return nil, fmt.Errorf("bases[%d].id: %w", i, err)
		}
		if b.Created, err = parseTime(jb.Created); err != nil {
			return nil, fmt.Errorf("bases[%d].created: %w", i, err)
		}
		if jb.Provides != nil {
			b.Provides = make([]storepath.Path, 0, len(*jb.Provides))
			for _, r := range *jb.Provides {
				rp, err := dir.Base(r)
				if err != nil {
					return nil, fmt.Errorf("bases[%d].provides: %w", i, err)
				}
				b.Provides = append(b.Provides, rp)
			}
		}
		for k, name := range jb.Channels {
			if err := channel.CheckName(name); err != nil {
				return nil, fmt.Errorf("bases[%d].channels: %w", i, err)
			}
			if k > 0 && jb.Channels[k-1] >= name {
				return nil, fmt.Errorf("bases[%d].channels: %s: not sorted and unique", i, name)
			}
		}
		b.Channels = jb.Channels
		bs = append(bs, b)
	}
	return bs, nil
}

// pathList collects the paths of a manifest of the given version as
// they are decoded: they must be sorted and unique, which lets
// Manifest.path search them.
type pathList struct {
	dir     storepath.Dir // "" when storeDir is bad: fromJSON says so first
	version int
	ps      []PathEntry
	err     error
}

func (l *pathList) reset() { l.ps, l.err = nil, nil }

func (l *pathList) add(i int, jp *jsonPath) {
	if l.dir == "" || l.err != nil {
		return
	}
	p, err := pathFromJSON(l.dir, jp)
	if err != nil {
		l.err = fmt.Errorf("paths[%d] %s: %w", i, jp.Path, err)
		return
	}
	if i > 0 {
		switch c := storepath.Compare(l.ps[i-1].Path, p.Path); {
		case c == 0:
			l.err = fmt.Errorf("paths[%d] %s: listed twice", i, jp.Path)
			return
		case c > 0:
			l.err = fmt.Errorf("paths[%d] %s: paths not sorted", i, jp.Path)
			return
		}
	}
	if p.Delta != nil && l.version < deltasVersion {
		l.err = fmt.Errorf("paths[%d] %s: a delta in a version %d manifest", i, jp.Path, l.version)
		return
	}
	l.ps = append(l.ps, p)
}

// decodeManifest is json.Unmarshal(data, j), except that each element of
// "targets" and "paths" goes to ts and ps as it is decoded rather than
// into j: a channel's 100,000 paths, all held as JSON values first, would
// add 100 MB at once. data is a JSON object.
func decodeManifest(data []byte, j *jsonManifest, ts *targetList, ps *pathList) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return err
	}
	rest := []byte{'{'} // the other keys, for json.Unmarshal
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := json.Marshal(t)
		switch field(key) {
		case "targets":
			err = decodeArray(dec, ts.reset, ts.add)
		case "paths":
			err = decodeArray(dec, ps.reset, ps.add)
		default:
			var v json.RawMessage
			if err = dec.Decode(&v); err == nil {
				if len(rest) > 1 {
					rest = append(rest, ',')
				}
				rest = append(append(append(rest, key...), ':'), v...)
			}
		}
		if err != nil {
			return err
		}
	}
	return json.Unmarshal(append(rest, '}'), j)
}

// field says whether json.Unmarshal would decode the object key (JSON)
// into jsonManifest's "targets" or "paths", which it matches without
// regard to case.
func field(key []byte) string {
	var probe struct {
		Targets json.RawMessage `json:"targets"`
		Paths   json.RawMessage `json:"paths"`
	}
	json.Unmarshal(append(append([]byte{'{'}, key...), ":0}"...), &probe)
	switch {
	case probe.Targets != nil:
		return "targets"
	case probe.Paths != nil:
		return "paths"
	}
	return ""
}

// decodeArray decodes a JSON array, or null, passing each element to add
// in turn, after reset.
func decodeArray[T any](dec *json.Decoder, reset func(), add func(int, *T)) error {
	reset()
	t, err := dec.Token()
	switch {
	case err != nil:
		return err
	case t == nil:
		return nil
	case t != json.Delim('['):
		return fmt.Errorf("json: cannot unmarshal %v into an array", t)
	}
	for i := 0; dec.More(); i++ {
		var v T
		if err := dec.Decode(&v); err != nil {
			return err
		}
		add(i, &v)
	}
	_, err = dec.Token()
	return err
}

// filesFromJSON reads the files and returns their names too, for the
// channels to be checked against.
func filesFromJSON(jfs []jsonFile) ([]File, map[string]bool, error) {
	var fs []File
	names := map[string]bool{}
	for i, jf := range jfs {
		f := File{Name: jf.Name, Size: jf.Size}
		if err := checkFileName(jf.Name); err != nil {
			return nil, nil, fmt.Errorf("files[%d]: %w", i, err)
		}
		if names[jf.Name] {
			return nil, nil, fmt.Errorf("files[%d] %s: listed twice", i, jf.Name)
		}
		names[jf.Name] = true
		var err error
		if f.SHA256, err = parseHex(jf.SHA256, sha256.Size); err != nil {
			return nil, nil, fmt.Errorf("files[%d] %s: sha256: %w", i, jf.Name, err)
		}
		if f.Size < 0 {
			return nil, nil, fmt.Errorf("files[%d] %s: negative size", i, jf.Name)
		}
		fs = append(fs, f)
	}
	return fs, names, nil
}

// channelsFromJSON reads the channels: each names a file of the bundle,
// and every file under channels/ is a channel's.
func channelsFromJSON(m *Manifest, jcs []jsonChannel, files map[string]bool) error {
	declared := map[string]bool{}
	for i, jc := range jcs {
		if err := channel.CheckName(jc.Name); err != nil {
			return fmt.Errorf("channels[%d]: %w", i, err)
		}
		if declared[jc.Name] {
			return fmt.Errorf("channels[%d] %s: listed twice", i, jc.Name)
		}
		if i > 0 && jcs[i-1].Name > jc.Name {
			return fmt.Errorf("channels[%d] %s: channels not sorted", i, jc.Name)
		}
		if !files[channel.File(jc.Name)] {
			return fmt.Errorf("channels[%d] %s: its expressions, %s, are not in files", i, jc.Name, channel.File(jc.Name))
		}
		declared[jc.Name] = true
		m.Channels = append(m.Channels, Channel(jc))
	}
	for _, f := range m.Files {
		if strings.HasPrefix(f.Name, channel.Dir+"/") {
			if name, ok := channel.NameOf(f.Name); !ok || !declared[name] {
				return fmt.Errorf("files %s: under %s/ but no channel's", f.Name, channel.Dir)
			}
		}
	}
	return nil
}

func pathFromJSON(dir storepath.Dir, jp *jsonPath) (PathEntry, error) {
	var (
		p   PathEntry
		err error
	)
	if p.Path, err = dir.Parse(jp.Path); err != nil {
		return p, err
	}
	if p.NarHash, err = parseSHA256(jp.NarHash); err != nil {
		return p, fmt.Errorf("narHash: %w", err)
	}
	if p.NarSize = jp.NarSize; p.NarSize == 0 {
		return p, errors.New("narSize is 0")
	}
	if err := checkURL(jp.URL); err != nil {
		return p, err
	}
	p.URL = jp.URL
	if p.FileHash, err = parseSHA256(jp.FileHash); err != nil {
		return p, fmt.Errorf("fileHash: %w", err)
	}
	p.FileSize = jp.FileSize
	if jp.Compression == "" {
		return p, errors.New("no compression")
	}
	p.Compression = jp.Compression
	for _, r := range jp.References {
		rp, err := dir.Base(r)
		if err != nil {
			return p, fmt.Errorf("references: %w", err)
		}
		p.References = append(p.References, rp)
	}
	if !slices.IsSortedFunc(p.References, storepath.Compare) || len(slices.CompactFunc(slices.Clone(p.References), func(a, b storepath.Path) bool { return a == b })) != len(p.References) {
		return p, errors.New("references not sorted and unique")
	}
	if jp.Deriver != "" {
		if p.Deriver, err = dir.Base(jp.Deriver); err != nil {
			return p, fmt.Errorf("deriver: %w", err)
		}
	}
	p.CA = jp.CA
	if len(jp.Roles) == 0 {
		return p, errors.New("no roles")
	}
	for _, r := range jp.Roles {
		rs, err := role.Parse(r)
		if err != nil {
			return p, err
		}
		p.Roles |= rs
	}
	if jf := jp.Flat; jf != nil {
		f := &FlatHashes{}
		for _, h := range []struct {
			name string
			s    string
			dst  *[]byte
			algo storepath.Algo
		}{{"md5", jf.MD5, &f.MD5, storepath.MD5}, {"sha1", jf.SHA1, &f.SHA1, storepath.SHA1}, {"sha256", jf.SHA256, &f.SHA256, storepath.SHA256}, {"sha512", jf.SHA512, &f.SHA512, storepath.SHA512}} {
			if *h.dst, err = parseHex(h.s, h.algo.Size()); err != nil {
				return p, fmt.Errorf("flat.%s: %w", h.name, err)
			}
		}
		p.Flat = f
	}
	if p.Origin, err = originFromJSON(jp.Origin); err != nil {
		return p, err
	}
	if p.Fetch, err = fetchFromJSON(jp.Fetch); err != nil {
		return p, err
	}
	if p.Delta, err = deltaFromJSON(dir, jp.Delta, p.URL); err != nil {
		return p, err
	}
	return p, nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339, s)
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func parseSHA256(s string) (storepath.Hash, error) {
	h, err := storepath.ParseHash(s)
	if err != nil {
		return h, err
	}
	if h.Algo != storepath.SHA256 {
		return h, fmt.Errorf("%q: want sha256", s)
	}
	return h, nil
}

func parseHex(s string, size int) ([]byte, error) {
	if len(s) != 2*size || strings.ToLower(s) != s {
		return nil, fmt.Errorf("%q: want %d lower-case hex digits", s, 2*size)
	}
	return hex.DecodeString(s)
}

// headJSON is m in manifest.json's shape but for its targets and paths,
// which writeJSON streams one at a time. The lists the spec requires are
// empty rather than nil, so that they encode as [].
func (m *Manifest) headJSON() (*jsonManifest, error) {
	if _, err := storepath.ParseDir(string(m.StoreDir)); err != nil {
		return nil, fmt.Errorf("storeDir: %w", err)
	}
	j := &jsonManifest{
		Format:      m.Format,
		Version:     m.Version,
		Tool:        m.Tool,
		Created:     formatTime(m.Created),
		StoreDir:    string(m.StoreDir),
		Mode:        m.Mode.String(),
		Derivations: m.Derivations,
		Targets:     []jsonTarget{},
		Bases:       basesToJSON(m.Bases),
		Paths:       []jsonPath{},
		Files:       filesToJSON(m.Files),
		Channels:    channelsToJSON(m.Channels),
	}
	if j.Format == "" {
		j.Format = Format
	}
	if j.Version == 0 {
		j.Version = m.version()
	}
	if len(m.Volumes) > 0 {
		j.Version, j.VolumeSize, j.Volumes = VolumesVersion, m.VolumeSize, volumesToJSON(m.Volumes)
	}
	return j, nil
}

func (t *Target) toJSON() jsonTarget {
	jt := jsonTarget{Spec: t.Spec, Outputs: make(map[string]string, len(t.Outputs))}
	if t.DrvPath != (storepath.Path{}) {
		jt.DrvPath = t.DrvPath.String()
	}
	for name, p := range t.Outputs {
		jt.Outputs[name] = p.String()
	}
	return jt
}

func basesToJSON(bs []Base) []jsonBase {
	jbs := make([]jsonBase, 0, len(bs))
	for _, b := range bs {
		jb := jsonBase{ID: b.ID.String(), Created: formatTime(b.Created), Paths: b.Paths, Kind: b.Kind}
		if b.Provides != nil {
			provides := slices.Clone(b.Provides)
			slices.SortFunc(provides, storepath.Compare)
			names := []string{}
			for _, p := range slices.Compact(provides) {
				names = append(names, p.Base())
			}
			jb.Provides = &names
		}
		jb.Channels = slices.Compact(slices.Sorted(slices.Values(b.Channels)))
		jbs = append(jbs, jb)
	}
	return jbs
}

// toJSON is p's entry in manifest.json, its references sorted and unique.
func (p *PathEntry) toJSON() (jsonPath, error) {
	jp := jsonPath{
		Path:        p.Path.String(),
		NarHash:     p.NarHash.String(),
		NarSize:     p.NarSize,
		URL:         p.URL,
		FileHash:    p.FileHash.String(),
		FileSize:    p.FileSize,
		Compression: p.Compression,
		References:  []string{},
		CA:          p.CA,
		Roles:       append([]string{}, p.Roles.Names()...),
	}
	refs := slices.Clone(p.References)
	slices.SortFunc(refs, storepath.Compare)
	for _, r := range slices.Compact(refs) {
		jp.References = append(jp.References, r.Base())
	}
	if p.Deriver != (storepath.Path{}) {
		jp.Deriver = p.Deriver.Base()
	}
	if f := p.Flat; f != nil {
		jp.Flat = &jsonFlat{MD5: hex.EncodeToString(f.MD5), SHA1: hex.EncodeToString(f.SHA1), SHA256: hex.EncodeToString(f.SHA256), SHA512: hex.EncodeToString(f.SHA512)}
	}
	jp.Origin = p.Origin.toJSON()
	jp.Delta = p.Delta.toJSON()
	var err error
	jp.Fetch, err = p.Fetch.toJSON()
	return jp, err
}

func filesToJSON(fs []File) []jsonFile {
	fs = slices.Clone(fs)
	slices.SortFunc(fs, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	jfs := make([]jsonFile, 0, len(fs))
	for _, f := range fs {
		jfs = append(jfs, jsonFile{Name: f.Name, SHA256: hex.EncodeToString(f.SHA256), Size: f.Size})
	}
	return jfs
}

func channelsToJSON(cs []Channel) []jsonChannel {
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b Channel) int { return strings.Compare(a.Name, b.Name) })
	var jcs []jsonChannel
	for _, c := range cs {
		jcs = append(jcs, jsonChannel(c))
	}
	return jcs
}
