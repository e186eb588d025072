package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/firstboot/config"
)

func TestClusterNew(t *testing.T) {
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		cmd := newClusterCmd()
		cmd.SetOut(&out)
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(append([]string{"new"}, args...))
		err := cmd.Execute()
		return out.String(), err
	}
	out, err := run("--name", "garage", "--size", "5", "--vip", "192.168.1.250/24", "--interface", "eth0", "--peer", "10.0.0.1", "--peer", "10.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse([]byte(out))
	if err != nil {
		t.Fatalf("printed config does not parse: %v\n%s", err, out)
	}
	if c.Cluster.Name != "garage" || c.Cluster.Size != 5 || c.Cluster.VIP.String() != "192.168.1.250/24" ||
		c.Cluster.Interface != "eth0" || len(c.Cluster.Peers) != 2 {
		t.Errorf("config %+v", c.Cluster)
	}
	out2, _ := run()
	c2, err := config.Parse([]byte(out2))
	if err != nil || c2.Cluster.Key == c.Cluster.Key || c2.Cluster.Name != "kiln" {
		t.Errorf("second config: %v, same key or wrong default name", err)
	}
	for _, bad := range [][]string{{"--name", "Not OK"}, {"--size", "0"}, {"--vip", "10.0.0.1"}, {"--peer", "host.example"}} {
		if _, err := run(bad...); err == nil {
			t.Errorf("%q accepted", bad)
		} else if !strings.Contains(err.Error(), "cluster.") && !strings.Contains(err.Error(), "--") {
			t.Errorf("%q: error %v names neither field nor flag", bad, err)
		}
	}
}

// rotate-key writes the three steps: old+new accepted, new+old accepted, new alone; each a valid config with
// everything else unchanged, mode 0600; it refuses to overwrite a rotation.
func TestClusterRotateKey(t *testing.T) {
	dir := t.TempDir()
	cur, err := config.New("garage")
	if err != nil {
		t.Fatal(err)
	}
	cur.Cluster.Size = 5
	b, err := cur.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(in, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "rotation")
	cmd := newClusterRotateKeyCmd()
	cmd.SetArgs([]string{in, "--out", out})
	cmd.SetOut(io.Discard)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var got []*config.Config
	for _, st := range rotationSteps {
		p := filepath.Join(out, st.file)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want 0600", p, err, fi.Mode())
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		c, err := config.Parse(data)
		if err != nil || c.Cluster.Size != 5 || c.Cluster.Name != "garage" {
			t.Fatalf("%s: %+v, %v", p, c, err)
		}
		got = append(got, c)
	}
	old, next := cur.Cluster.Key, got[1].Cluster.Key
	if next == old ||
		got[0].Cluster.Key != old || !slices.Equal(got[0].Cluster.AcceptKeys, []config.Key{next}) ||
		!slices.Equal(got[1].Cluster.AcceptKeys, []config.Key{old}) ||
		got[2].Cluster.Key != next || len(got[2].Cluster.AcceptKeys) != 0 {
		t.Errorf("steps: %v %v / %v %v / %v %v", got[0].Cluster.Key, got[0].Cluster.AcceptKeys, got[1].Cluster.Key,
			got[1].Cluster.AcceptKeys, got[2].Cluster.Key, got[2].Cluster.AcceptKeys)
	}
	cmd = newClusterRotateKeyCmd()
	cmd.SetArgs([]string{in, "--out", out})
	cmd.SetOut(io.Discard)
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second rotation into the same directory: %v, want a refusal", err)
	}
}
