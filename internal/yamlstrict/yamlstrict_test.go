package yamlstrict

import (
	"strings"
	"testing"
)

type inner struct {
	Size  int      `yaml:"size"`
	Names []string `yaml:"names"`
}

type doc struct {
	Name  string   `yaml:"name"`
	Items []string `yaml:"items"`
	Inner inner    `yaml:"inner"`
	Flag  bool     `yaml:"flag"`
}

func TestDecodeErrors(t *testing.T) {
	for _, c := range []struct {
		in, want string
	}{
		{"name: a\nitmes: [x]\n", `f.yaml:2:1: unknown field "itmes"; did you mean "items"?`},
		{"name: a\nzzz: 1\n", `f.yaml:2:1: unknown field "zzz" (fields here: name, items, inner, flag)`},
		{"name: a\nitems: 5\n", `f.yaml:2:8: items: want a list, got int 5`},
		{"name: 123\n", `f.yaml:1:7: name: want a string, got int 123 (quote it)`},
		{"inner:\n  size: big\n", `f.yaml:2:9: inner.size: want a whole number, got str big`},
		{"inner:\n  sise: 3\n", `f.yaml:2:3: inner: unknown field "sise"; did you mean "size"?`},
		{"name: a\nname: b\n", `f.yaml:2:1: name: given twice`},
		{"items:\n  - a\n - b\n", `f.yaml:3:2: YAML syntax: did not find expected key`},
		{"name: a\nitems: [x\ninner: {}\n", `f.yaml:2:1: YAML syntax: did not find expected ',' or ']'`},
		{"items: [a,\n  b]\nname: [x\n", `f.yaml:3:1: YAML syntax: did not find expected ',' or ']'`},
		{"name: a\n\tflag: true\n", `f.yaml:2:1: YAML syntax: found a tab character that violates indentation`},
		{"name: a\n---\nname: b\n", `f.yaml:2:1: a second YAML document; the file is one document`},
		{"", `f.yaml: empty file`},
	} {
		var d doc
		_, err := Decode("f.yaml", []byte(c.in), &d)
		if err == nil || err.Error() != c.want {
			t.Errorf("%q:\n got %v\nwant %s", c.in, err, c.want)
		}
	}
}

func TestDecodePositions(t *testing.T) {
	var d doc
	pos, err := Decode("f.yaml", []byte("name: a\ninner:\n  names:\n    - x\n    - y\n"), &d)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "a" || strings.Join(d.Inner.Names, ",") != "x,y" {
		t.Errorf("decoded %+v", d)
	}
	if e := pos.At("f.yaml", "inner.names[1]", "bad"); e.Error() != "f.yaml:5:7: inner.names[1]: bad" {
		t.Errorf("At = %v", e)
	}
	// A field the file does not have is placed at the mapping that would hold it.
	if e := pos.At("f.yaml", "inner.size", "required"); e.Error() != "f.yaml:3:3: inner.size: required" {
		t.Errorf("At(missing) = %v", e)
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"packages", "firmware", "overlays", "name", "status", "start"}
	for word, want := range map[string]string{"pakages": "packages", "pacakges": "packages", "nmae": "name",
		"stauts": "status", "xyz": "", "overlay": "overlays", "firmwares": "firmware"} {
		if got := Suggest(word, names); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", word, got, want)
		}
	}
}
