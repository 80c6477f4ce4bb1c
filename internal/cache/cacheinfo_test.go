package cache

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCacheInfo(t *testing.T) {
	tests := []struct {
		name, in string
		want     CacheInfo
		err      string
	}{
		{name: "nix", in: "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
			want: CacheInfo{StoreDir: "/nix/store", WantMassQuery: true, Priority: 40}},
		// All that nix copy --to file://DIR writes: checked with Nix 2.8.0,
		// 2.26.3 and 2.34.8 (the machine's and the Nix matrix's chroots).
		{name: "nix copy 2.8 to 2.34, defaults", in: "StoreDir: /nix/store\n",
			want: CacheInfo{StoreDir: "/nix/store", Priority: 50}},
		{name: "crlf, spaces, no final newline", in: "StoreDir:   /x/store \r\nWantMassQuery:1\r\nPriority: 10",
			want: CacheInfo{StoreDir: "/x/store", WantMassQuery: true, Priority: 10}},
		{name: "unknown keys and junk lines", in: "Junk\n\nFoo: bar\nStoreDir: /nix/store\nWantMassQuery: yes\n",
			want: CacheInfo{StoreDir: "/nix/store", Priority: 50}},
		{name: "later line wins", in: "StoreDir: /a\nStoreDir: /b\nPriority: 1\nPriority: 2\n",
			want: CacheInfo{StoreDir: "/b", Priority: 2}},
		{name: "negative priority", in: "StoreDir: /nix/store\nPriority: -3\n",
			want: CacheInfo{StoreDir: "/nix/store", Priority: -3}},
		{name: "no StoreDir", in: "Priority: 40\n", err: "no StoreDir"},
		{name: "empty", in: "", err: "no StoreDir"},
		{name: "relative StoreDir", in: "StoreDir: nix/store\n", err: "line 1: StoreDir"},
		{name: "bad priority", in: "StoreDir: /nix/store\nPriority: 4x\n", err: `line 2: Priority "4x"`},
		{name: "too long", in: "StoreDir: /nix/store\n" + strings.Repeat("x", maxCacheInfo), err: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCacheInfo(strings.NewReader(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("ParseCacheInfo = %+v, %v; want error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseCacheInfo (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseCacheInfo(f *testing.F) {
	f.Add("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
	f.Fuzz(func(t *testing.T, in string) {
		info, err := ParseCacheInfo(strings.NewReader(in))
		if err != nil {
			return
		}
		data, err := info.MarshalText()
		if err != nil {
			t.Fatalf("MarshalText of parsed %+v: %v", info, err)
		}
		again, err := ParseCacheInfo(strings.NewReader(string(data)))
		if err != nil {
			t.Fatalf("re-parse %q: %v", data, err)
		}
		if again != info {
			t.Fatalf("round trip: %+v became %+v", info, again)
		}
	})
}
