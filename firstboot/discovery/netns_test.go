package discovery

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/netif"
)

// TestBroadcastBeaconsInNetns runs the production beacon path — sockets on ":7947" with SO_BROADCAST,
// beacons to the subnet broadcast address chosen by netif — inside a network namespace of its own (a veth
// pair carrying three node addresses), since broadcast does not work on lo and the host network is not
// ours to touch. The test re-executes itself inside the namespace. Needs root and iproute2.
func TestBroadcastBeaconsInNetns(t *testing.T) {
	if os.Getenv("KILN_NETNS_CHILD") == "1" {
		broadcastChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	ns := fmt.Sprintf("kilnfb-%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip("-n", ns, "link", "set", "lo", "up")
	ip("-n", ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
	ip("-n", ns, "link", "set", "veth0", "up")
	ip("-n", ns, "link", "set", "veth1", "up")
	for _, a := range []string{"10.99.0.11/24", "10.99.0.12/24", "10.99.0.13/24"} {
		ip("-n", ns, "addr", "add", a, "dev", "veth0")
	}
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^TestBroadcastBeaconsInNetns$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "KILN_NETNS_CHILD=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("child test failed: %v", err)
	}
}

func broadcastChild(t *testing.T) {
	// The interface selection a node would make here: no default route, so the first with carrier.
	c, err := netif.Select("", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Interface != "veth0" || c.Addr != netip.MustParseAddr("10.99.0.11") || c.Broadcast != netip.MustParseAddr("10.99.0.255") {
		t.Fatalf("netif chose %+v", c)
	}
	target := []netip.AddrPort{netip.AddrPortFrom(c.Broadcast, BeaconPort)}
	var nodes []testNode
	for i, id := range []string{"a1", "b2", "c3"} {
		nodes = append(nodes, startNode(t, id, fmt.Sprintf("10.99.0.%d", 11+i), testKey, func(cfg *Config) {
			cfg.Port = GossipPort
			cfg.Beacon = BeaconConfig{Listen: fmt.Sprintf(":%d", BeaconPort), Targets: target, Interval: 200 * time.Millisecond}
		}))
	}
	for _, n := range nodes {
		waitFor(t, 15*time.Second, "3 members via broadcast beacons on "+n.cfg.NodeID, func() bool { return sameIDs(alive(n.Discovery), "a1", "b2", "c3") })
	}
}
