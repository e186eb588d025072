package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/internal/cli"
)

// update rewrites testdata/*.golden from what the commands print: go test ./cmd/kiln -run Golden -update.
var update = flag.Bool("update", false, "rewrite golden files")

// cliRun runs kiln in-process as main does (the exit status and the printed error included).
func cliRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRootCmd()
	var out, errw bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errw)
	root.SetArgs(args)
	c, err := root.ExecuteContextC(context.Background())
	code = cli.Report(c, "kiln", args, err, &out, &errw)
	return out.String(), errw.String(), code
}

// golden compares what a user sees for args (stdout, stderr, exit status) with testdata/<name>.golden.
// replace rewrites variable parts (temp dirs, random keys) before the comparison.
func golden(t *testing.T, name string, stdout, stderr string, code int, args []string, replace ...string) {
	t.Helper()
	got := fmt.Sprintf("$ kiln %s\n--- stdout\n%s--- stderr\n%s--- exit %d\n", strings.Join(args, " "), stdout, stderr, code)
	for i := 0; i+1 < len(replace); i += 2 {
		got = regexp.MustCompile(replace[i]).ReplaceAllString(got, replace[i+1])
	}
	compareGolden(t, filepath.Join("testdata", name+".golden"), got)
}

// compareGolden compares got with the file at path, or rewrites it under -update.
func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	name := strings.TrimSuffix(filepath.Base(path), ".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s: output differs from %s (run with -update if the change is intended)\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

// TestGoldenUsage pins the words and exit status of usage mistakes and of errors that are the user's to fix.
func TestGoldenUsage(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
	}{
		{"unknown-command", []string{"biuld"}},
		{"unknown-subcommand", []string{"lab", "stauts"}},
		{"unknown-flag", []string{"build", "--fromat", "raw"}},
		{"bad-int-flag", []string{"cluster", "new", "--size", "three"}},
		{"too-many-args", []string{"build", "a.yaml", "b.yaml"}},
		{"too-many-args-json", []string{"build", "a.yaml", "b.yaml", "--json"}},
		{"build-bad-rebuild", []string{"build", "--rebuild", "kernel"}},
		{"bad-duration-flag", []string{"lab", "up", "--wait", "5"}},
		{"cluster-vip-no-prefix", []string{"cluster", "new", "--vip", "10.77.0.100"}},
		{"cluster-vip-network", []string{"cluster", "new", "--vip", "10.77.0.0/24"}},
		{"cluster-vip-broadcast", []string{"cluster", "new", "--vip", "10.77.0.255/24"}},
		{"cluster-vip-ipv6", []string{"cluster", "new", "--vip", "fd00::10/64"}},
		{"cluster-size-2", []string{"cluster", "new", "--size", "2"}},
		{"cluster-peer-name", []string{"cluster", "new", "--peer", "node1.example"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := cliRun(t, c.args...)
			golden(t, "usage/"+c.name, stdout, stderr, code, c.args)
		})
	}
}

// A cluster config without --vip says what the empty value means; --force writes a small cluster with a warning.
func TestGoldenClusterNew(t *testing.T) {
	key := `key: [A-Za-z0-9+/=]+`
	for _, c := range []struct {
		name string
		args []string
	}{
		{"cluster-new-default", []string{"cluster", "new"}},
		{"cluster-new-vip", []string{"cluster", "new", "--vip", "192.168.1.250/24"}},
		{"cluster-new-force", []string{"cluster", "new", "--size", "1", "--force"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := cliRun(t, c.args...)
			golden(t, "cluster/"+c.name, stdout, stderr, code, c.args, key, `key: KEY`)
		})
	}
}

// TestGoldenSpecErrors pins what `kiln build` prints for broken specs: file:line:col, the field path, a "did
// you mean" for unknown keys, every problem at once; and the default spec named as such.
func TestGoldenSpecErrors(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, spec string }{
		{"unknown-key", "name: demo\npakages: [systemd]\ndistribution:\n  suite: bookworm\n  mirorr: http://deb.debian.org/debian\n"},
		{"type", "name: demo\npackages: 5\ndisk:\n  espSizeMiB: big\n"},
		{"syntax-indent", "name: demo\npackages:\n  - linux-image-amd64\n - systemd\n"},
		{"syntax-flow", "name: demo\npackages: [linux-image-amd64,\n  systemd]\nformats: [raw\n"},
		{"validation", "name: Demo\npackages: [linux-image-amd64, systemd, '', systemd]\ndisk:\n  espSizeMiB: 32\n  compression: gzip\nkernel:\n  cmdline: [boot=x]\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Chdir(t.TempDir()) // the spec's name in messages is then as short as a user's
			file := c.name + ".yaml"
			if err := os.WriteFile(file, []byte(c.spec), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, code := cliRun(t, "build", file, "--cache", "cache")
			got := fmt.Sprintf("--- %s\n%s$ kiln build %s\n--- stdout\n%s--- stderr\n%s--- exit %d\n", file, c.spec, file, stdout, stderr, code)
			compareGolden(t, filepath.Join(wd, "testdata", "spec", c.name+".golden"), got)
		})
	}
	t.Run("default-spec-missing", func(t *testing.T) {
		t.Chdir(t.TempDir())
		stdout, stderr, code := cliRun(t, "build")
		got := fmt.Sprintf("$ kiln build\n--- stdout\n%s--- stderr\n%s--- exit %d\n", stdout, stderr, code)
		compareGolden(t, filepath.Join(wd, "testdata", "spec", "default-spec-missing.golden"), got)
	})
}
