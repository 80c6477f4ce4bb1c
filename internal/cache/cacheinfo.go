package cache

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// maxCacheInfo caps how much of nix-cache-info we read; real ones are
// three short lines.
const maxCacheInfo = 64 << 10

// CacheInfo is the content of nix-cache-info.
type CacheInfo struct {
	StoreDir      storepath.Dir
	WantMassQuery bool
	// Priority orders substituters, lower first; Nix's default is 50.
	Priority int
}

// ParseCacheInfo parses nix-cache-info as Nix's BinaryCacheStore::init
// does: "Key: value" lines, values trimmed, unknown keys and lines without
// a colon ignored, a later line overriding an earlier one. Unlike Nix, which
// accepts a cache with no StoreDir for any store, it requires StoreDir, and
// it rejects a Priority that is not a number (Nix's stoi would take "40x").
func ParseCacheInfo(r io.Reader) (CacheInfo, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxCacheInfo+1))
	if err != nil {
		return CacheInfo{}, err
	}
	if len(data) > maxCacheInfo {
		return CacheInfo{}, fmt.Errorf("longer than %d bytes", maxCacheInfo)
	}
	info := CacheInfo{Priority: 50}
	haveDir := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxCacheInfo+1)
	for n := 1; sc.Scan(); n++ {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		value = strings.Trim(value, " \t\r\n")
		switch key {
		case "StoreDir":
			d, err := storepath.ParseDir(value)
			if err != nil {
				return CacheInfo{}, fmt.Errorf("line %d: StoreDir: %w", n, err)
			}
			info.StoreDir, haveDir = d, true
		case "WantMassQuery":
			info.WantMassQuery = value == "1"
		case "Priority":
			p, err := strconv.Atoi(value)
			if err != nil {
				return CacheInfo{}, fmt.Errorf("line %d: Priority %q is not a number", n, value)
			}
			info.Priority = p
		}
	}
	if !haveDir {
		return CacheInfo{}, errors.New("no StoreDir line")
	}
	return info, nil
}

// MarshalText writes info as Nix does.
func (info CacheInfo) MarshalText() ([]byte, error) {
	if _, err := storepath.ParseDir(string(info.StoreDir)); err != nil {
		return nil, fmt.Errorf("nix-cache-info: StoreDir: %w", err)
	}
	wmq := 0
	if info.WantMassQuery {
		wmq = 1
	}
	return fmt.Appendf(nil, "StoreDir: %s\nWantMassQuery: %d\nPriority: %d\n", info.StoreDir, wmq, info.Priority), nil
}
