package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStacks(t *testing.T) {
	path := writeSpecDir(t, good+"stacks:\n  - {name: app, file: app.yaml}\n", goodButane)
	dir := filepath.Dir(path)
	write(t, filepath.Join(dir, "app.yaml"), "services:\n  web:\n    image: nginx:1.27\n")
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Stacks) != 1 || s.Stacks[0].Name != "app" {
		t.Errorf("stacks = %+v", s.Stacks)
	}

	// A compose file that is not valid fails the build at its own file and line.
	write(t, filepath.Join(dir, "app.yaml"), "services:\n  web:\n    image: nginx:1.27\n    build: .\n")
	_, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "app.yaml")+":4: services.web.build: not in the compose subset") {
		t.Errorf("bad compose file: %v", err)
	}
	write(t, filepath.Join(dir, "app.yaml"), "services:\n  web:\n    image: [nginx\n")
	if _, err = Load(path); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "app.yaml")+":2: did not find") {
		t.Errorf("YAML error: %v", err)
	}
	os.Remove(filepath.Join(dir, "app.yaml"))

	for _, tc := range []struct{ stacks, want string }{
		{"  - {name: app, file: nope.yaml}\n", "stacks[0].file: nope.yaml: no such file"},
		{"  - {name: Bad, file: c.yaml}\n", `stacks[0].name: stack name "Bad"`},
		{"  - {name: kiln-ingress, file: c.yaml}\n", `stacks[0].name: "kiln-ingress" is the agent's own stack`},
		{"  - {name: a, file: c.yaml}\n  - {name: a, file: c.yaml}\n", `stacks[1].name: "a" is also stacks[0]`},
	} {
		path := writeSpecDir(t, good+"stacks:\n"+tc.stacks, goodButane)
		write(t, filepath.Join(filepath.Dir(path), "c.yaml"), "services:\n  web:\n    image: nginx:1.27\n")
		if _, err := Load(path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.stacks, err, tc.want)
		}
	}
}
