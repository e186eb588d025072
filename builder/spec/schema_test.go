package spec

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/invopop/jsonschema"
	jsv "github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite docs/spec.schema.json from the Go types")

const schemaFile = "../../docs/spec.schema.json"

// schema generates the spec's JSON Schema from the Go types and their comments: one source of truth,
// the published file is checked against it (TestSchemaUpToDate).
func schema(t *testing.T) []byte {
	t.Helper()
	r := &jsonschema.Reflector{RequiredFromJSONSchemaTags: true, ExpandedStruct: true}
	if err := r.AddGoComments("github.com/kiln-project/kiln/builder/spec", "./"); err != nil {
		t.Fatal(err)
	}
	s := r.Reflect(&Spec{})
	s.ID = "https://github.com/kiln-project/kiln/docs/spec.schema.json"
	s.Title = "kiln image spec"
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// TestSchemaUpToDate fails when docs/spec.schema.json differs from the Go types; fix with
// go test ./builder/spec -run TestSchemaUpToDate -update
func TestSchemaUpToDate(t *testing.T) {
	want := schema(t)
	if *update {
		if err := os.WriteFile(schemaFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatalf("%v (generate it with -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/spec.schema.json is stale: run go test ./builder/spec -run TestSchemaUpToDate -update")
	}
}

// TestSchemaValidatesSpecs checks the published schema accepts images/node.yaml and rejects the typos
// that Load rejects, so editors using it warn about the same things.
func TestSchemaValidatesSpecs(t *testing.T) {
	c := jsv.NewCompiler()
	sch, err := c.Compile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	node, err := os.ReadFile("../../images/node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, yaml string
		ok         bool
	}{
		{"images/node.yaml", string(node), true},
		{"minimal", "name: x\npackages: [systemd]\n", true},
		{"unknown field", "name: x\npakages: [systemd]\n", false},
		{"pxe format", "name: x\npackages: [systemd]\nformats: [raw, qcow2, pxe]\n", true},
		{"bad format", "name: x\npackages: [systemd]\nformats: [vdi]\n", false},
		{"bad name", "name: X_1\npackages: [systemd]\n", false},
		{"small esp", "name: x\npackages: [systemd]\ndisk: {espSizeMiB: 8}\n", false},
	} {
		var doc any
		if err := yaml.Unmarshal([]byte(tc.yaml), &doc); err != nil {
			t.Fatal(err)
		}
		// Round-trip through JSON: the validator wants JSON types (float64 numbers, string keys).
		b, _ := json.Marshal(doc)
		inst, err := jsv.UnmarshalJSON(strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		err = sch.Validate(inst)
		if (err == nil) != tc.ok {
			t.Errorf("%s: valid=%v, want %v (%v)", tc.name, err == nil, tc.ok, err)
		}
	}
}
