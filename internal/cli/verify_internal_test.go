package cli

import (
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func TestSummaryRebuilt(t *testing.T) {
	for n, want := range map[int]string{1: "(1 NAR rebuilt from its binary delta)", 2: "(2 NARs rebuilt from binary deltas)"} {
		got := summary(&bundle.Report{Source: "b", Paths: 3, Rebuilt: n, Signer: "k"}, nil)
		if !strings.Contains(got, want) {
			t.Errorf("summary with %d rebuilt = %q, want %q", n, got, want)
		}
	}
}

func TestVolumeLine(t *testing.T) {
	tests := []struct {
		v    bundle.VolumeReport
		want string
	}{
		{bundle.VolumeReport{Count: 4, Given: []int{1, 3}, Missing: []int{2, 4}}, "volumes 1, 3 of 4 given; still missing: volumes 2, 4"},
		{bundle.VolumeReport{Count: 19, Given: []int{1, 2, 5}, Missing: []int{3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}}, "volumes 1, 2, 5 of 19 given; still missing: volumes 3, 4, 6-19"},
		{bundle.VolumeReport{Count: 5, Given: []int{2, 3, 4}, Missing: []int{1, 5}}, "volumes 2-4 of 5 given; still missing: volumes 1, 5"},
		{bundle.VolumeReport{Count: 3, Given: []int{1, 2, 3}}, "all 3 volumes given"},
		{bundle.VolumeReport{Count: 1, Given: []int{1}}, "volume 1 of 1 given"},
	}
	for _, tt := range tests {
		if got := volumeLine(&tt.v); got != tt.want {
			t.Errorf("volumeLine(%+v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

// TestSummaryNothingChecked: a failure before any path was checked says
// so where the OK line has its counts, and the signer in its own clause
// after them, as the OK line does: not as if the signer were the problem.
func TestSummaryNothingChecked(t *testing.T) {
	problem := []bundle.Problem{{File: "b.001.tar", Kind: bundle.KindMissing, Problem: "no such file"}}
	id := storepath.Hash{Algo: storepath.SHA256, Digest: make([]byte, 32)}
	tests := []struct {
		rep  bundle.Report
		err  error
		want string
	}{
		{bundle.Report{Source: "b.001.tar", ID: id, Signer: "pack.site-1", Problems: problem}, nil, "b.001.tar: FAILED, 1 problem: no store path checked, signed by pack.site-1"},
		{bundle.Report{Source: "b", ID: id, Problems: problem}, bundle.ErrUnsigned, "b: FAILED, 1 problem: no store path checked, unsigned"},
		{bundle.Report{Source: "b", Problems: problem}, nil, "b: FAILED, 1 problem"},
	}
	for _, tt := range tests {
		if got := summary(&tt.rep, tt.err); got != tt.want {
			t.Errorf("summary(%+v, %v) = %q, want %q", tt.rep, tt.err, got, tt.want)
		}
	}
}
