package firewall

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// The forward chain with real routing: a "container" behind a docker-named bridge port on the node reaches a
// member's ordinary ports but none of its cluster ports; from the LAN, only a member reaches a container
// through the node when nothing was published.
//
//	ctr 172.30.0.2 --dockerT0/vctr-- node 10.99.7.1, 10.99.8.1 --kfw0/kfw1-- lan: member 10.99.7.2, stranger 10.99.8.3
func TestForwardInNetns(t *testing.T) {
	needNetns(t)
	ctx := context.Background()
	node := fmt.Sprintf("kiln-fwf-node-%d", os.Getpid())
	lan := fmt.Sprintf("kiln-fwf-lan-%d", os.Getpid())
	ctr := fmt.Sprintf("kiln-fwf-ctr-%d", os.Getpid())
	for _, ns := range []string{node, lan, ctr} {
		newNetns(t, ns)
	}
	mustRun(t, "ip", "link", "add", "kfw0", "netns", node, "type", "veth", "peer", "name", "kfw1", "netns", lan)
	mustRun(t, "ip", "link", "add", "dockerT0", "netns", node, "type", "veth", "peer", "name", "vctr", "netns", ctr)
	for _, c := range [][]string{
		{"-n", node, "addr", "add", "10.99.7.1/24", "dev", "kfw0"},
		{"-n", node, "addr", "add", "10.99.8.1/24", "dev", "kfw0"},
		{"-n", node, "addr", "add", "172.30.0.1/24", "dev", "dockerT0"},
		{"-n", lan, "addr", "add", "10.99.7.2/24", "dev", "kfw1"},
		{"-n", lan, "addr", "add", "10.99.8.3/24", "dev", "kfw1"},
		{"-n", ctr, "addr", "add", "172.30.0.2/24", "dev", "vctr"},
		{"-n", node, "link", "set", "kfw0", "up"},
		{"-n", node, "link", "set", "dockerT0", "up"},
		{"-n", lan, "link", "set", "kfw1", "up"},
		{"-n", ctr, "link", "set", "vctr", "up"},
		{"-n", ctr, "route", "add", "default", "via", "172.30.0.1"},
		{"-n", lan, "route", "add", "172.30.0.0/24", "via", "10.99.7.1"},
	} {
		mustRun(t, "ip", c...)
	}
	mustRun(t, "ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	r := New(nftIn(node), Options{DiscoveryPorts: []uint16{7948}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s := &state.State{Inputs: state.Inputs{Subnet: netip.MustParsePrefix("10.99.7.0/24")}, Observed: state.Observed{
		Self:    member.Member{ID: "a", Addr: netip.MustParseAddr("10.99.7.1")},
		Members: []member.Member{{ID: "a", Addr: netip.MustParseAddr("10.99.7.1")}, {ID: "b", Addr: netip.MustParseAddr("10.99.7.2")}}}}
	if _, err := r.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}

	listen := func(ns string, addrs ...string) {
		for _, a := range addrs {
			var l net.Listener
			inNetns(t, ns, func() {
				var err error
				if l, err = net.Listen("tcp", a); err != nil {
					t.Fatal(err)
				}
			})
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
	}
	listen(lan, "0.0.0.0:22", "0.0.0.0:2377", "0.0.0.0:24007", "0.0.0.0:49152")
	listen(ctr, "0.0.0.0:8080")
	dial := func(ns, from, to string) error {
		var err error
		inNetns(t, ns, func() {
			d := net.Dialer{Timeout: 700 * time.Millisecond}
			if from != "" {
				d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
			}
			var c net.Conn
			if c, err = d.Dial("tcp", to); err == nil {
				c.Close()
			}
		})
		return err
	}
	if err := dial(ctr, "", "10.99.7.2:22"); err != nil {
		t.Errorf("container → member's ssh: %v, want connected (only cluster ports are closed to containers)", err)
	}
	for _, port := range []string{"2377", "24007", "49152"} {
		if err := dial(ctr, "", "10.99.7.2:"+port); err == nil {
			t.Errorf("container → member's %s connected, want dropped", port)
		}
	}
	if err := dial(lan, "10.99.7.2", "172.30.0.2:8080"); err != nil {
		t.Errorf("member → unpublished container port: %v, want connected", err)
	}
	if err := dial(lan, "10.99.8.3", "172.30.0.2:8080"); err == nil {
		t.Errorf("stranger routed through the node → unpublished container port connected, want dropped")
	}
}
