package testenv

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// Namespace creates a network namespace named prefix+pid with its loopback up, removed when t ends. It skips
// under -short and without root (ip netns needs both a real kernel and privileges).
func Namespace(t *testing.T, prefix string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for ip netns")
	}
	ns := fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("%s: lo up: %v: %s", ns, err, out)
	}
	return ns
}

// Host is one machine of a LAN: a network namespace whose eth0 is on the LAN's bridge at Addr.
type Host struct {
	NS   string
	Addr netip.Addr
}

// LAN creates n hosts on one bridge, the way the real-daemon tests and benchmarks wire their dockerds,
// glusterds and agents: a hub namespace holding the bridge, and per host a namespace whose eth0 (a veth into
// the hub) has address subnet+11+i, with loopback up. Names carry prefix and the pid, so concurrent test
// binaries never share one. Everything is removed when tb ends; cleanups a caller registers afterwards (its
// processes in the namespaces) run first.
func LAN(tb testing.TB, prefix string, subnet netip.Prefix, n int) []Host {
	tb.Helper()
	tag := strconv.Itoa(os.Getpid() % 100000)
	sh := func(args ...string) {
		tb.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			tb.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	hub := prefix + "-hub-" + tag
	sh("netns", "add", hub)
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", hub).Run() })
	sh("-n", hub, "link", "add", "br0", "type", "bridge")
	sh("-n", hub, "link", "set", "br0", "up")
	hosts := make([]Host, n)
	for i := range n {
		h := Host{NS: fmt.Sprintf("%s-%s-%d", prefix, tag, i), Addr: subnet.Masked().Addr()}
		for range 11 + i {
			h.Addr = h.Addr.Next()
		}
		sh("netns", "add", h.NS)
		tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", h.NS).Run() })
		peer := fmt.Sprintf("p%d", i)
		sh("link", "add", "eth0", "netns", h.NS, "type", "veth", "peer", peer, "netns", hub)
		sh("-n", hub, "link", "set", peer, "master", "br0", "up")
		sh("-n", h.NS, "addr", "add", netip.PrefixFrom(h.Addr, subnet.Bits()).String(), "dev", "eth0")
		sh("-n", h.NS, "link", "set", "eth0", "up")
		sh("-n", h.NS, "link", "set", "lo", "up")
		hosts[i] = h
	}
	return hosts
}
