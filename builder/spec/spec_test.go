package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// good is a minimal valid spec; each case below breaks it in one way.
const good = `name: test
distribution:
  suite: bookworm
  architecture: amd64
packages: [linux-image-amd64, systemd]
overlays: [overlay]
butane: test.bu
`

const goodButane = `variant: fcos
version: 1.4.0
passwd:
  users:
    - name: admin
`

// writeSpecDir lays out a spec dir: images/x.yaml, images/test.bu, images/overlay/.
func writeSpecDir(t *testing.T, yaml, butane string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "images")
	if err := os.MkdirAll(filepath.Join(dir, "overlay"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "x.yaml"), yaml)
	if butane != "" {
		write(t, filepath.Join(dir, "test.bu"), butane)
	}
	return filepath.Join(dir, "x.yaml")
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadGood(t *testing.T) {
	path := writeSpecDir(t, good, goodButane)
	s, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// Defaults fill what the file leaves out.
	if s.Disk.ESPSizeMiB != 256 || s.Disk.Compression != "zstd" || s.Disk.CompressionLevel != 3 {
		t.Errorf("disk defaults = %+v", s.Disk)
	}
	if strings.Join(s.Formats, ",") != "raw,qcow2" {
		t.Errorf("formats default = %v", s.Formats)
	}
	if strings.Join(s.Distribution.Components, ",") != "main,non-free-firmware" {
		t.Errorf("components default = %v", s.Distribution.Components)
	}
	if got := s.Path("overlay"); got != filepath.Join(filepath.Dir(path), "overlay") {
		t.Errorf("Path(overlay) = %s", got)
	}
	if s.DefaultSourceDateEpoch() != 1686355200 {
		t.Errorf("DefaultSourceDateEpoch = %d, want bookworm's release day", s.DefaultSourceDateEpoch())
	}
}

// TestLoadPXE: pxe is a format like the others, listed beside them.
func TestLoadPXE(t *testing.T) {
	path := writeSpecDir(t, strings.Replace(good, "butane: test.bu", "butane: test.bu\nformats: [raw, qcow2, pxe]", 1), goodButane)
	s, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if strings.Join(s.Formats, ",") != "raw,qcow2,pxe" {
		t.Errorf("formats = %v", s.Formats)
	}
}

// TestLoadErrors is the catalogue of spec mistakes and the message each one gets. Every message starts
// with the file and names the field path (or the line, for YAML-level problems).
func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replace [2]string // applied to good
		butane  string    // default goodButane
		want    []string  // each must appear in the error; the placeholders @F and @B are the spec and Butane files
	}{
		{"unknown field", [2]string{"packages:", "pakages:"}, "",
			[]string{`@F:5:1: unknown field "pakages"; did you mean "packages"?`}},
		{"wrong type", [2]string{"name: test", "name: [a]"}, "",
			[]string{"@F:1:7: name: want a string, got a list"}},
		{"syntax", [2]string{"suite: bookworm", "suite: : :"}, "",
			[]string{"@F:3:3: YAML syntax: mapping values are not allowed"}},
		{"bad name", [2]string{"name: test", "name: Test_1"}, "",
			[]string{`@F:1:7: name: "Test_1" must match [a-z0-9-]{1,40}`}},
		{"empty package", [2]string{"systemd]", "systemd, '', x]"}, "",
			[]string{"@F:5:40: packages[2]: empty package name", `@F:5:44: packages[3]: "x" is not a valid package name`}},
		{"duplicate package", [2]string{"systemd]", "systemd, systemd]"}, "",
			[]string{`@F:5:40: packages[2]: "systemd" is listed twice`}},
		{"no packages", [2]string{"packages: [linux-image-amd64, systemd]", "packages: []"}, "",
			[]string{"@F:5:11: packages: empty"}},
		{"architecture", [2]string{"amd64", "arm64"}, "",
			[]string{`@F:4:17: distribution.architecture: "arm64" is not supported`}},
		{"missing overlay", [2]string{"[overlay]", "[overlay, ../overlays/nope]"}, "",
			[]string{"@F:6:21: overlays[1]: ../overlays/nope: no such directory"}},
		{"missing butane", [2]string{"test.bu", "nope.bu"}, "",
			[]string{"@F:7:9: butane: nope.bu: no such file"}},
		{"bad format", [2]string{"butane: test.bu", "butane: test.bu\nformats: [raw, vdi, raw]"}, "",
			[]string{`@F:8:16: formats[1]: "vdi" is not one of`, `@F:8:21: formats[2]: "raw" is listed twice`}},
		{"esp too small", [2]string{"butane: test.bu", "butane: test.bu\ndisk: {espSizeMiB: 32}"}, "",
			[]string{"@F:8:20: disk.espSizeMiB: 32 is out of range [64, 4096]"}},
		{"compression", [2]string{"butane: test.bu", "butane: test.bu\ndisk: {compression: gzip}"}, "",
			[]string{`@F:8:21: disk.compression: "gzip" is not one of zstd, xz`}},
		{"cmdline", [2]string{"butane: test.bu", "butane: test.bu\nkernel: {cmdline: ['', 'a b', boot=x]}"}, "",
			[]string{"@F:8:20: kernel.cmdline[0]: empty argument", "@F:8:24: kernel.cmdline[1]", "@F:8:31: kernel.cmdline[2]"}},
		{"exclude", [2]string{"butane: test.bu", "butane: test.bu\nexclude: [/usr/share/doc/*, usr/lib/x, /*, '/a b']"}, "",
			[]string{`@F:8:29: exclude[1]: "usr/lib/x" must be an absolute path glob`, `@F:8:40: exclude[2]: "/*"`, `@F:8:44: exclude[3]: "/a b"`}},
		{"two documents", [2]string{"butane: test.bu", "butane: test.bu\n---\nname: other"}, "",
			[]string{"@F:8:1: a second YAML document"}},
		// Butane problems name the Butane file with line and column.
		{"butane unknown key", [2]string{}, goodButane + "storage:\n  filez: []\n",
			[]string{"@B:7:3: warning at $.storage.filez: unused key filez"}},
		{"butane invalid", [2]string{}, goodButane + "storage:\n  files:\n    - path: relative\n",
			[]string{"@B:8:13: error at $.storage.files.0.path: path not absolute"}},
		{"butane too new", [2]string{}, strings.Replace(goodButane, "1.4.0", "1.5.0", 1),
			[]string{"@B: translates to Ignition the image cannot apply (it accepts ≤ 3.3.0"}},
		{"butane not yaml", [2]string{}, "variant: fcos\nversion: 1.4.0\n: :\n",
			[]string{"@B: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := good
			if tc.replace[0] != "" {
				if !strings.Contains(y, tc.replace[0]) {
					t.Fatalf("bad test: %q not in spec", tc.replace[0])
				}
				y = strings.Replace(y, tc.replace[0], tc.replace[1], 1)
			}
			bu := goodButane
			if tc.butane != "" {
				bu = tc.butane
			}
			path := writeSpecDir(t, y, bu)
			s, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", s)
			}
			r := strings.NewReplacer("@F", path, "@B", filepath.Join(filepath.Dir(path), "test.bu"))
			for _, w := range tc.want {
				if w = r.Replace(w); !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, filepath.Dir(path)) {
					t.Errorf("error line %q does not start with the file", line)
				}
			}
		})
	}
}

func TestIgnitionDeterministic(t *testing.T) {
	path := writeSpecDir(t, good, goodButane+"storage:\n  files:\n    - path: /etc/motd\n      overwrite: true\n      contents: {inline: hi}\n")
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Ignition()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Ignition()
	if string(a) != string(b) {
		t.Fatal("two translations differ")
	}
	// Not gzip-compressed: the motd stays readable in user.ign.
	if !strings.Contains(string(a), `"version":"3.3.0"`) || !strings.Contains(string(a), "data:,hi") {
		t.Errorf("ignition = %s", a)
	}
	noButane := &Spec{}
	if e, _ := noButane.Ignition(); string(e) != `{"ignition":{"version":"3.3.0"}}` {
		t.Errorf("empty config = %s", e)
	}
}

// TestNodeSpec keeps the shipped images/node.yaml loadable (it needs the image helper's overlays).
func TestNodeSpec(t *testing.T) {
	if _, err := os.Stat("../../overlays/base"); err != nil {
		t.Skip("overlays/base not there yet (the image stages' helper adds it)")
	}
	s, err := Load("../../images/node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "node" || s.Butane != "node.bu" {
		t.Errorf("node spec = %+v", s)
	}
}
