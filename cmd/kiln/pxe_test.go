package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPXEServeFlags checks the flags reach pxe.Start: each case fails one of its checks, before any port is bound.
func TestPXEServeFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "cluster.yaml")
	var out bytes.Buffer
	c := newClusterCmd()
	c.SetOut(&out)
	c.SetArgs([]string{"new"})
	if err := c.Execute(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--dir", filepath.Join(dir, "nope"), "--interface", "lo"}, "no such directory"},
		{[]string{"--dir", dir, "--interface", "lo"}, "not a kiln pxe directory"},
		{[]string{"--dir", dir, "--config", cfg}, "--config holds the cluster key"},
		{[]string{"--dir", dir, "--config", cfg, "--allow-mac", "nonsense"}, `--allow-mac "nonsense"`},
		{[]string{"--dir", dir, "--interface", "lo", "--http-port", "0"}, "--http-port 0"},
		{[]string{"--dir", dir, "--interface", "nosuch0"}, "--interface nosuch0"},
	} {
		cmd := newPXECmd()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(append([]string{"serve"}, tt.args...))
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want one saying %q", tt.args, err, tt.want)
		}
	}
	var help bytes.Buffer
	cmd := newPXECmd()
	cmd.SetOut(&help)
	cmd.SetArgs([]string{"serve", "--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(help.String(), "Trust: /cluster.yaml holds the cluster key") {
		t.Errorf("--help does not state the trust model:\n%s", help.String())
	}
}
