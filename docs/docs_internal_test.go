package docs

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSections(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []section
	}{
		{"none", "# title\n\ntext\n", nil},
		{"two", "# title\nintro\n## Targets\nt\n\n### Sub\ns\n## pack\np\n\n\n", []section{
			{"targets", "## Targets\nt\n\n### Sub\ns\n"},
			{"pack", "## pack\np\n"},
		}},
		{"fenced", "## plan\n```sh\n## not a heading\n```\nafter\n## gc\ng", []section{
			{"plan", "## plan\n```sh\n## not a heading\n```\nafter\n"},
			{"gc", "## gc\ng\n"},
		}},
		{"not level 2", "## a\n#### b\n##c\n", []section{{"a", "## a\n#### b\n##c\n"}}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, sections(tt.doc), cmp.AllowUnexported(section{})); diff != "" {
			t.Errorf("%s: sections (-want +got):\n%s", tt.name, diff)
		}
	}
}
