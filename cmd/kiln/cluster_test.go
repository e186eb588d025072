package main

import (
	"bytes"
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
