package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/spec"
)

// fake is a stage writing one file; the last one writes <name>.<format> for each spec format.
type fake struct {
	name string
	s    *spec.Spec
}

func (f fake) Name() string { return f.name }
func (f fake) Inputs(context.Context) (map[string]string, error) {
	if f.name != "formats" {
		return map[string]string{"packages": strings.Join(f.s.Packages, " ")}, nil
	}
	return map[string]string{"formats": strings.Join(f.s.Formats, ",")}, nil
}
func (f fake) Run(_ context.Context, _ *builder.Env, dir string) error {
	switch f.name {
	case "packages":
		return os.WriteFile(filepath.Join(dir, "packages.tsv"), []byte("systemd\t252\n"), 0o644)
	case "formats":
		for _, fm := range f.s.Formats {
			p := filepath.Join(dir, f.s.Name+"."+fm)
			if fm == spec.FormatPXE { // a directory, as the real stage writes it
				if err := os.Mkdir(filepath.Join(dir, "pxe"), 0o755); err != nil {
					return err
				}
				p = filepath.Join(dir, "pxe", "vmlinuz")
			}
			if err := os.WriteFile(p, []byte(fm), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

func fakeStages(s *spec.Spec) []builder.Stage {
	var st []builder.Stage
	for _, n := range []string{"packages", "base", "node", "disk", "formats"} {
		st = append(st, fake{n, s})
	}
	return st
}

// kiln runs the CLI in-process and returns stdout and the error main would print.
func kiln(t *testing.T, args ...string) (string, error) {
	t.Helper()
	old := buildStages
	buildStages = fakeStages
	defer func() { buildStages = old }()
	root := newRootCmd()
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return stdout.String(), err
}

func specDir(t *testing.T, body string) (specPath, out, cacheDir string) {
	t.Helper()
	d := t.TempDir()
	specPath = filepath.Join(d, "x.yaml")
	if err := os.WriteFile(specPath, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return specPath, filepath.Join(d, "out"), filepath.Join(d, "cache")
}

func TestBuildCLI(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	path, out, c := specDir(t, "name: demo\npackages: [systemd]\n")

	// The summary table lists every stage; a second build hits the cache everywhere.
	stdout, err := kiln(t, "build", path, "--out", out, "--cache", c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"STAGE", "packages", "formats", "miss", out + "/demo.raw", out + "/demo.qcow2"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	stdout, err = kiln(t, "build", path, "--out", out, "--cache", c, "--json", "--format", "raw")
	if err != nil {
		t.Fatal(err)
	}
	var m builder.Manifest
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatalf("--json output is not a manifest: %v\n%s", err, stdout)
	}
	if len(m.Artifacts) != 1 || m.Artifacts[0].File != "demo.raw" || m.SourceDateEpoch != 1686355200 {
		t.Errorf("manifest = %+v", m)
	}
	if !m.Stages[0].CacheHit || m.Stages[4].CacheHit {
		t.Errorf("--format raw should re-run only what depends on it: %+v", m.Stages)
	}

	// Adding pxe re-runs the formats stage only, and its directory is published file by file.
	stdout, err = kiln(t, "build", path, "--out", out, "--cache", c, "--json", "--format", "raw,qcow2,pxe")
	if err != nil {
		t.Fatal(err)
	}
	m = builder.Manifest{}
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatalf("--json output is not a manifest: %v\n%s", err, stdout)
	}
	for _, s := range m.Stages {
		if s.CacheHit != (s.Name != "formats") {
			t.Errorf("--format raw,qcow2,pxe: %s cacheHit=%v (%s)", s.Name, s.CacheHit, s.Why)
		}
	}
	if len(m.Artifacts) != 3 || m.Artifacts[2].File != "pxe/vmlinuz" || m.Artifacts[2].Format != "pxe" {
		t.Errorf("artifacts = %+v", m.Artifacts)
	}
	if b, err := os.ReadFile(filepath.Join(out, "pxe", "vmlinuz")); err != nil || string(b) != "pxe" {
		t.Errorf("out/pxe/vmlinuz = %q, %v", b, err)
	}
}

// TestBuildCLIErrors: each mistake is one clear message naming the file or flag, and writes nothing.
func TestBuildCLIErrors(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		args       []string
		want       string
	}{
		{"unknown field", "name: demo\npakages: [systemd]\n", nil, `x.yaml:2:1: unknown field "pakages"; did you mean "packages"?`},
		{"bad package", "name: demo\npackages: [systemd, '']\n", nil, "x.yaml:2:21: packages[1]: empty package name"},
		{"missing overlay", "name: demo\npackages: [systemd]\noverlays: [../overlays/nope]\n", nil,
			"x.yaml:3:12: overlays[0]: ../overlays/nope: no such directory"},
		{"bad format flag", "name: demo\npackages: [systemd]\n", []string{"--format", "vdi"}, `--format vdi: not one of`},
		{"bad rebuild flag", "name: demo\npackages: [systemd]\n", []string{"--rebuild", "kernel"}, `--rebuild kernel: not a stage`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, out, c := specDir(t, tc.spec)
			_, err := kiln(t, append([]string{"build", path, "--out", out, "--cache", c}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("%s created after a failed build", out)
			}
		})
	}
	if _, err := kiln(t, "build", "/nonexistent/spec.yaml"); err == nil || !strings.Contains(err.Error(), "/nonexistent/spec.yaml") {
		t.Errorf("missing spec: %v", err)
	}
}
