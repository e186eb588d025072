package firewall

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/run"
)

// needNetns skips unless the test can create network namespaces (root, ip and nft present).
func needNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// newNetns creates a named network namespace with lo up, deleted in t.Cleanup.
func newNetns(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	if _, err := run.Cmd(ctx, "ip", "netns", "add", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Cmd(context.Background(), "ip", "netns", "del", name) })
	mustRun(t, "ip", "-n", name, "link", "set", "lo", "up")
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run.Cmd(context.Background(), name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// nftIn runs nft inside namespace ns.
func nftIn(ns string) NFT {
	return func(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
		return run.CmdIn(ctx, stdin, "ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
	}
}

// inNetns runs f on a thread switched into namespace ns; sockets f creates stay in ns.
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(fmt.Sprintf("cannot return to the original netns: %v", err))
		}
	}()
	f()
}

// dockerTables stands in for docker's iptables-nft tables: they must survive every apply.
const dockerTables = `table ip filter {
	chain DOCKER-USER {
		return
	}
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
		counter jump DOCKER-USER
	}
}
table ip nat {
	chain PREROUTING {
		type nat hook prerouting priority dstnat; policy accept;
	}
}
`

func TestApplyInNetns(t *testing.T) {
	needNetns(t)
	ctx := context.Background()
	node := fmt.Sprintf("kiln-fw-node-%d", os.Getpid())
	peer := fmt.Sprintf("kiln-fw-peer-%d", os.Getpid())
	newNetns(t, node)
	newNetns(t, peer)
	// node 10.99.7.1 <-veth-> peer with a member address .2 and a stranger address .3 on a foreign /24.
	mustRun(t, "ip", "link", "add", "kfw0", "netns", node, "type", "veth", "peer", "name", "kfw1", "netns", peer)
	mustRun(t, "ip", "-n", node, "addr", "add", "10.99.7.1/24", "dev", "kfw0")
	mustRun(t, "ip", "-n", node, "addr", "add", "10.99.8.1/24", "dev", "kfw0")
	mustRun(t, "ip", "-n", peer, "addr", "add", "10.99.7.2/24", "dev", "kfw1")
	mustRun(t, "ip", "-n", peer, "addr", "add", "10.99.8.3/24", "dev", "kfw1")
	mustRun(t, "ip", "-n", node, "link", "set", "kfw0", "up")
	mustRun(t, "ip", "-n", peer, "link", "set", "kfw1", "up")

	nft := nftIn(node)
	if _, err := nft(ctx, []byte(dockerTables), "-f", "-"); err != nil {
		t.Fatal(err)
	}
	dockerBefore := mustRun(t, "ip", "netns", "exec", node, "nft", "list", "table", "ip", "filter")

	r := New(nft, Options{DiscoveryPorts: []uint16{7373}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s := &state.State{Inputs: state.Inputs{Subnet: netip.MustParsePrefix("10.99.7.0/24")}, Observed: state.Observed{Self: member.Member{ID: "a", Addr: netip.MustParseAddr("10.99.7.1")}, Members: []member.Member{{ID: "a", Addr: netip.MustParseAddr("10.99.7.1")}, {ID: "b", Addr: netip.MustParseAddr("10.99.7.2")}}}}
	reconcile := func(wantChanged bool) {
		t.Helper()
		changed, err := r.Reconcile(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if changed != wantChanged {
			t.Fatalf("Reconcile changed = %v, want %v", changed, wantChanged)
		}
	}
	reconcile(true)
	reconcile(false) // idempotent: the loaded table carries the same marker

	// Restart safety: a new reconciler (agent restarted) sees the loaded table and does nothing.
	r2 := New(nft, Options{DiscoveryPorts: []uint16{7373}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if changed, err := r2.Reconcile(ctx, s); err != nil || changed {
		t.Fatalf("fresh reconciler: changed=%v err=%v, want no change", changed, err)
	}

	if after := mustRun(t, "ip", "netns", "exec", node, "nft", "list", "table", "ip", "filter"); after != dockerBefore {
		t.Fatalf("docker's table changed:\n%s\nwas:\n%s", after, dockerBefore)
	}

	// The rules filter for real: swarm's 2377 answers the member, not the stranger; 22 answers both.
	var lSwarm, lSSH net.Listener
	inNetns(t, node, func() {
		var err error
		if lSwarm, err = net.Listen("tcp", "0.0.0.0:2377"); err != nil {
			t.Fatal(err)
		}
		if lSSH, err = net.Listen("tcp", "0.0.0.0:22"); err != nil {
			t.Fatal(err)
		}
	})
	defer lSwarm.Close()
	defer lSSH.Close()
	for _, l := range []net.Listener{lSwarm, lSSH} {
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
	dial := func(from, to string) error {
		var err error
		inNetns(t, peer, func() {
			d := net.Dialer{Timeout: 700 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			var c net.Conn
			if c, err = d.Dial("tcp", to); err == nil {
				c.Close()
			}
		})
		return err
	}
	if err := dial("10.99.7.2", "10.99.7.1:2377"); err != nil {
		t.Errorf("member → 2377: %v, want connected", err)
	}
	if err := dial("10.99.8.3", "10.99.8.1:2377"); err == nil {
		t.Errorf("stranger → 2377 connected, want dropped")
	}
	if err := dial("10.99.8.3", "10.99.8.1:22"); err != nil {
		t.Errorf("stranger → 22: %v, want connected", err)
	}

	// Membership change → new table; a table deleted behind our back (e.g. `flush ruleset`) is restored.
	s.Members = append(s.Members, member.Member{ID: "c", Addr: netip.MustParseAddr("10.99.8.3")})
	reconcile(true)
	if err := dial("10.99.8.3", "10.99.8.1:2377"); err != nil {
		t.Errorf("new member → 2377: %v, want connected", err)
	}
	mustRun(t, "ip", "netns", "exec", node, "nft", "delete", "table", "inet", "kiln")
	reconcile(true)
	reconcile(false)
	listed := mustRun(t, "ip", "netns", "exec", node, "nft", "list", "tables")
	for _, want := range []string{"table ip filter", "table ip nat", "table inet kiln"} {
		if !strings.Contains(listed, want) {
			t.Errorf("tables after apply lack %q:\n%s", want, listed)
		}
	}
}
