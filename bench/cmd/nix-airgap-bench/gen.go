package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Content categories of the machine's files, told apart by magic bytes.
const (
	catELF  = "elf"  // binaries and shared libraries
	catComp = "comp" // already compressed: gzip, xz, zstd, bzip2, zip/jar, PNG
	catText = "text" // everything else: text, headers, scripts, data
)

// Shape says what closure gen makes.
type Shape struct {
	Paths   int   // number of store paths
	Total   int64 // their NAR contents, bytes, roughly
	MaxPath int64 // the largest path's size: exactly one path has it
	MinPath int64 // the smallest size drawn
	Seed    uint64
}

// Closure is what gen made: gen writes it as closure.json.
type Closure struct {
	StoreDir string           `json:"storeDir"`
	Top      string           `json:"top"`
	Paths    []GenPath        `json:"paths"`
	Shape    Shape            `json:"shape"`
	Sources  []string         `json:"sources"`
	Pool     map[string]int64 `json:"pool"` // bytes available per category
}

// GenPath is one generated store path.
type GenPath struct {
	Path       string   `json:"path"`
	Size       int64    `json:"size"` // file contents, bytes
	Kind       string   `json:"kind"`
	References []string `json:"references"`
}

type poolFile struct {
	path string
	size int64
}

// pool is the machine's files by category, in a fixed order.
type pool map[string][]poolFile

// buildPool walks roots for regular files up to maxFile bytes and sorts
// them by magic bytes.
func buildPool(roots []string, maxFile int64) (pool, error) {
	p := pool{}
	magic := make([]byte, 6)
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // unreadable corners of the machine are skipped
			}
			if !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil || info.Size() == 0 || info.Size() > maxFile {
				return nil
			}
			f, err := os.Open(path)
			if err != nil {
				return nil
			}
			n, _ := io.ReadFull(f, magic)
			f.Close()
			cat := classify(magic[:n])
			p[cat] = append(p[cat], poolFile{path, info.Size()})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("walk %s: %w", root, err)
		}
	}
	for _, c := range []string{catELF, catComp, catText} {
		if len(p[c]) == 0 {
			return nil, fmt.Errorf("pool: no %s files under %v", c, roots)
		}
	}
	return p, nil
}

func classify(m []byte) string {
	switch {
	case len(m) >= 4 && string(m[:4]) == "\x7fELF":
		return catELF
	case len(m) >= 2 && m[0] == 0x1f && m[1] == 0x8b, // gzip
		len(m) >= 6 && string(m[:6]) == "\xfd7zXZ\x00",
		len(m) >= 4 && string(m[:4]) == "\x28\xb5\x2f\xfd", // zstd
		len(m) >= 3 && string(m[:3]) == "BZh",
		len(m) >= 4 && string(m[:4]) == "PK\x03\x04",
		len(m) >= 4 && string(m[:4]) == "\x89PNG":
		return catComp
	}
	return catText
}

// Path kinds and the mix of content each holds, like lib, bin and doc
// outputs of real packages.
type kindSpec struct {
	name   string
	weight float64
	mix    map[string]float64
}

var kinds = []kindSpec{
	{"lib", 0.40, map[string]float64{catELF: 0.70, catText: 0.25, catComp: 0.05}},
	{"bin", 0.20, map[string]float64{catELF: 0.85, catText: 0.15}},
	{"doc", 0.15, map[string]float64{catText: 0.60, catComp: 0.40}},
	{"data", 0.10, map[string]float64{catComp: 0.70, catText: 0.30}},
	{"mixed", 0.15, map[string]float64{catELF: 0.40, catText: 0.40, catComp: 0.20}},
}

func pickWeighted[K any](rng *rand.Rand, items []K, weight func(K) float64) K {
	var sum float64
	for _, it := range items {
		sum += weight(it)
	}
	x := rng.Float64() * sum
	for _, it := range items {
		x -= weight(it)
		if x < 0 {
			return it
		}
	}
	return items[len(items)-1]
}

// sizes draws n path sizes, log-uniform between min and max and scaled to
// add up to about total; the first is exactly max.
func sizes(rng *rand.Rand, s Shape) []int64 {
	out := make([]float64, s.Paths)
	lo, hi := math.Log(float64(s.MinPath)), math.Log(float64(s.MaxPath))
	for i := range out {
		out[i] = math.Exp(lo + rng.Float64()*(hi-lo))
	}
	out[0] = float64(s.MaxPath)
	// Scale the others so the sum approaches Total, within [min, max].
	for range 20 {
		var sum float64
		for _, v := range out {
			sum += v
		}
		rest := sum - out[0]
		want := float64(s.Total) - out[0]
		if rest <= 0 || want <= 0 || math.Abs(rest-want) < want*0.01 {
			break
		}
		f := want / rest
		for i := 1; i < len(out); i++ {
			out[i] = min(max(out[i]*f, float64(s.MinPath)), float64(s.MaxPath))
		}
	}
	res := make([]int64, len(out))
	for i, v := range out {
		res[i] = int64(v)
	}
	return res
}

var nameRe = regexp.MustCompile(`[^A-Za-z0-9+._?=-]`)

// Generate adds a closure of shape s to the store dir's Nix (env) with
// nix-store --import, streaming each NAR from the machine's files.
func Generate(ctx context.Context, log *slog.Logger, env []string, dir storepath.Dir, roots []string, s Shape) (*Closure, error) {
	log.Info("gen: indexing the machine's files", "roots", roots)
	p, err := buildPool(roots, 64<<20)
	if err != nil {
		return nil, err
	}
	c := &Closure{StoreDir: string(dir), Shape: s, Sources: roots, Pool: map[string]int64{}}
	for cat, files := range p {
		for _, f := range files {
			c.Pool[cat] += f.size
		}
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x6e69782d61697267))
	sz := sizes(rng, s)
	// The big path lands somewhere in the middle of the graph.
	big := s.Paths / 3
	sz[0], sz[big] = sz[big], sz[0]

	referred := make([]bool, s.Paths)
	for i := range s.Paths {
		var digest [20]byte
		for j := range digest {
			digest[j] = byte(rng.UintN(256))
		}
		kind := pickWeighted(rng, kinds, func(k kindSpec) float64 {
			return k.weight
		})
		name := fmt.Sprintf("bench-%s-%03d", kind.name, i)
		if i == s.Paths-1 {
			name = "bench-closure-top"
			kind = kinds[4]
		}
		gp := GenPath{
			Path: string(dir) + "/" + nixbase32.EncodeToString(digest[:]) + "-" + name,
			Size: sz[i],
			Kind: kind.name,
		}
		if i == s.Paths-1 {
			// The top refers to everything nothing else refers to.
			for j := range i {
				if !referred[j] {
					gp.References = append(gp.References, c.Paths[j].Path)
				}
			}
		} else if i > 0 {
			n := min(i, rng.IntN(8))
			for range n {
				// Prefer recent paths, like layers of a real graph.
				j := i - 1 - int(math.Abs(rng.NormFloat64())*float64(i)/3)
				j = max(0, min(i-1, j))
				gp.References = append(gp.References, c.Paths[j].Path)
				referred[j] = true
			}
		}
		slices.Sort(gp.References)
		gp.References = slices.Compact(gp.References)
		c.Paths = append(c.Paths, gp)
	}
	c.Top = c.Paths[len(c.Paths)-1].Path

	cmd := exec.CommandContext(ctx, "nix-store", "--import")
	cmd.Env = env
	cmd.Stdout = io.Discard
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("gen: nix-store --import: %w", err)
	}
	bw := bufio.NewWriterSize(stdin, 1<<20)
	werr := func() error {
		for i, gp := range c.Paths {
			if i%50 == 0 {
				log.Info("gen: importing", "path", i, "of", len(c.Paths))
			}
			kind := kinds[slices.IndexFunc(kinds, func(k kindSpec) bool {
				return k.name == gp.Kind
			})]
			if err := writeExport(bw, rng, p, kind.mix, gp); err != nil {
				return fmt.Errorf("gen %s: %w", gp.Path, err)
			}
		}
		writeU64(bw, 0)
		return bw.Flush()
	}()
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("gen: nix-store --import: %w", err)
	}
	if werr != nil {
		return nil, werr
	}
	return c, nil
}

type entry struct {
	name   string
	src    string
	size   int64
	exec   bool
	link   string
	inline string
}

// writeExport writes one path in nix-store --export's format: 1, the NAR,
// the magic, the path, its references, its deriver, no signature.
func writeExport(w *bufio.Writer, rng *rand.Rand, p pool, mix map[string]float64, gp GenPath) error {
	dirs := pickEntries(rng, p, mix, gp)
	writeU64(w, 1)
	nw := nar.NewWriter(w)
	if err := nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeDirectory}); err != nil {
		return err
	}
	for _, d := range slices.Sorted(func(yield func(string) bool) {
		for k := range dirs {
			if !yield(k) {
				return
			}
		}
	}) {
		if err := nw.WriteHeader(&nar.Header{Path: "/" + d, Type: nar.TypeDirectory}); err != nil {
			return err
		}
		es := dirs[d]
		slices.SortFunc(es, func(a, b entry) int { return strings.Compare(a.name, b.name) })
		for _, e := range es {
			path := "/" + d + "/" + e.name
			if e.link != "" {
				if err := nw.WriteHeader(&nar.Header{Path: path, Type: nar.TypeSymlink, LinkTarget: e.link}); err != nil {
					return err
				}
				continue
			}
			if err := nw.WriteHeader(&nar.Header{Path: path, Type: nar.TypeRegular, Size: e.size, Executable: e.exec}); err != nil {
				return err
			}
			if e.src == "" {
				if _, err := io.WriteString(nw, e.inline); err != nil {
					return err
				}
				continue
			}
			if err := copyPrefix(nw, e.src, e.size); err != nil {
				return err
			}
		}
	}
	if err := nw.Close(); err != nil {
		return err
	}
	writeU64(w, 0x4558494e)
	writeString(w, gp.Path)
	writeU64(w, uint64(len(gp.References)))
	for _, r := range gp.References {
		writeString(w, r)
	}
	writeString(w, "") // deriver
	writeU64(w, 0)     // no legacy signature
	return nil
}

// pickEntries chooses gp's files from the pool, by category as mix weighs
// them, until they add up to its size, plus its references file, by
// top-level directory.
func pickEntries(rng *rand.Rand, p pool, mix map[string]float64, gp GenPath) map[string][]entry {
	dirs := map[string][]entry{}
	var refs strings.Builder
	for _, r := range gp.References {
		refs.WriteString(r + "\n")
	}
	dirs["nix-support"] = append(dirs["nix-support"], entry{name: "references", inline: refs.String(), size: int64(refs.Len())})
	left := gp.Size - int64(refs.Len())
	cats := slices.Sorted(func(yield func(string) bool) {
		for k := range mix {
			if !yield(k) {
				return
			}
		}
	})
	cursor := map[string]int{}
	used := map[string]bool{}
	for left > 0 {
		cat := pickWeighted(rng, cats, func(c string) float64 { return mix[c] })
		files := p[cat]
		i, ok := cursor[cat]
		if !ok {
			i = rng.IntN(len(files))
		}
		f := files[i%len(files)]
		cursor[cat] = i + 1 + rng.IntN(7)
		size := min(f.size, left)
		left -= size
		dir := "share"
		switch {
		case cat == catELF && strings.Contains(f.path, ".so"):
			dir = "lib"
		case cat == catELF:
			dir = "bin"
		}
		base := nameRe.ReplaceAllString(filepath.Base(f.path), "_")
		name := base
		for n := 1; used[dir+"/"+name]; n++ {
			name = fmt.Sprintf("%s-%d", base, n)
		}
		used[dir+"/"+name] = true
		dirs[dir] = append(dirs[dir], entry{name: name, src: f.path, size: size, exec: cat == catELF})
		if dir == "lib" && rng.IntN(4) == 0 {
			link := name + ".link"
			if !used[dir+"/"+link] {
				used[dir+"/"+link] = true
				dirs[dir] = append(dirs[dir], entry{name: link, link: name})
			}
		}
	}
	return dirs
}

// copyPrefix copies the first n bytes of file src; a file that shrank
// since indexing is padded with zeros so the NAR stays well formed.
func copyPrefix(w io.Writer, src string, n int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := io.CopyN(w, f, n)
	if err == io.EOF {
		_, err = io.CopyN(w, zeros{}, n-got)
	}
	return err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func writeU64(w *bufio.Writer, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	w.Write(b[:])
}

func writeString(w *bufio.Writer, s string) {
	writeU64(w, uint64(len(s)))
	w.WriteString(s)
	if pad := (8 - len(s)%8) % 8; pad > 0 {
		w.Write(make([]byte, pad))
	}
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
