// Package sbomtest validates CycloneDX SBOMs against the CycloneDX 1.6
// JSON schema, for tests. The schema files are committed under testdata
// and embedded; only tests import this package.
package sbomtest

import (
	"bytes"
	"embed"
	"fmt"
	"path"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed testdata/schema/*.json
var schemas embed.FS

// schemaBase is the URL the schemas' $ids and $refs live under.
const schemaBase = "http://cyclonedx.org/schema/"

// Validate fails t, listing every violation, unless data is a CycloneDX
// 1.6 JSON document that the schema accepts, formats included.
func Validate(t testing.TB, data []byte) {
	t.Helper()
	if err := validate(data); err != nil {
		t.Fatalf("SBOM does not validate against the CycloneDX 1.6 schema: %v", err)
	}
}

func validate(data []byte) error {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	ents, err := schemas.ReadDir("testdata/schema")
	if err != nil {
		return err
	}
	for _, e := range ents {
		b, err := schemas.ReadFile(path.Join("testdata/schema", e.Name()))
		if err != nil {
			return err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("schema %s: %w", e.Name(), err)
		}
		if err := c.AddResource(schemaBase+e.Name(), doc); err != nil {
			return err
		}
	}
	sch, err := c.Compile(schemaBase + "bom-1.6.schema.json")
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}
