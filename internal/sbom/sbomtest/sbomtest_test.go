package sbomtest

import "testing"

// TestValidateRejects makes sure the validator can fail: a document the
// schema refuses in several ways.
func TestValidateRejects(t *testing.T) {
	for _, doc := range []string{
		`{}`,
		`{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{"name": "x"}]}`,
		`{"bomFormat": "CycloneDX", "specVersion": "1.6", "serialNumber": "not-a-urn"}`,
		`{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{"type": "library", "name": "x", "hashes": [{"alg": "SHA-256", "content": "xyz"}]}]}`,
	} {
		if err := validate([]byte(doc)); err == nil {
			t.Errorf("validate(%s) = nil, want an error", doc)
		}
	}
	if err := validate([]byte(`{"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1}`)); err != nil {
		t.Errorf("validate of a minimal BOM: %v", err)
	}
}
