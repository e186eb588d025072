package dhcp

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n%s", p, got)
	}
}

func TestRenderGolden(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.77.0.0/24")
	c := Config{Interface: "br0", Subnet: subnet, Router: net.ParseIP("10.77.0.1"), Dir: "/state/lab/demo"}
	golden(t, "dnsmasq.conf", RenderConf(c))
	golden(t, "dhcp-hosts", RenderHosts([]Host{
		{MAC: "52:54:00:00:00:0c", IP: net.ParseIP("10.77.0.12")},
		{MAC: "52:54:00:00:00:0b", IP: net.ParseIP("10.77.0.11")},
		{MAC: "52:54:00:00:00:14", IP: net.ParseIP("10.77.0.100")},
	}))
}
