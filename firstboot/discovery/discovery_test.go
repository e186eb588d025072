package discovery

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fastTuning keeps membership tests quick; TestFailureDetection uses the production LANTuning.
var fastTuning = Tuning{ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond, SuspicionMult: 2,
	SuspicionMaxTimeoutMult: 3, GossipInterval: 50 * time.Millisecond, PushPullInterval: time.Second}

type testNode struct {
	*Discovery
	log *syncBuffer
}

func startNode(t *testing.T, id string, ip string, key []byte, mod func(*Config)) testNode {
	t.Helper()
	logs := &syncBuffer{}
	cfg := Config{NodeID: id, Hostname: "kiln-" + id, ClusterName: "garage", Key: key, Expected: 3,
		Bind: netip.MustParseAddr(ip), Port: 0, Tuning: &fastTuning,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&cfg)
	}
	d, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Kill() })
	return testNode{d, logs}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not a wait for an outcome
	}
	t.Fatalf("timed out after %s waiting for %s", within, what)
	return 0
}

func alive(d *Discovery) []string {
	var ids []string
	for _, p := range d.Peers() {
		if p.Alive {
			ids = append(ids, p.ID)
		}
	}
	return ids
}

func sameIDs(got []string, want ...string) bool {
	return strings.Join(got, ",") == strings.Join(want, ",")
}

func TestStaticPeersFormMembershipAndIgnoreOtherKey(t *testing.T) {
	a := startNode(t, "a1", "127.0.0.21", testKey, nil)
	seed := []string{a.Addr().String()}
	b := startNode(t, "b2", "127.0.0.22", testKey, func(c *Config) { c.Peers = seed })
	c := startNode(t, "c3", "127.0.0.23", testKey, func(c *Config) { c.Peers = seed })
	for _, n := range []testNode{a, b, c} {
		waitFor(t, 10*time.Second, "3 members on "+n.cfg.NodeID, func() bool { return sameIDs(alive(n.Discovery), "a1", "b2", "c3") })
	}
	// Metadata spreads: hostnames come from the peers' own metadata.
	waitFor(t, 5*time.Second, "metadata", func() bool {
		for _, p := range a.Peers() {
			if p.Hostname != "kiln-"+p.ID {
				return false
			}
		}
		return true
	})

	// A node with another key that knows a member's address (the worst case: it tries to join directly).
	intruder := startNode(t, "0bad", "127.0.0.24", bytes.Repeat([]byte{9}, 32), func(c *Config) { c.Peers = seed })
	waitFor(t, 10*time.Second, "the wrong-key join to be logged", func() bool {
		// The source address is the intruder's outgoing TCP address: memberlist dials without binding.
		return strings.Contains(a.log.String(), "ignored gossip from a node with another cluster key")
	})
	for _, n := range []testNode{a, b, c} {
		if !sameIDs(alive(n.Discovery), "a1", "b2", "c3") {
			t.Fatalf("%s admitted the intruder: %v", n.cfg.NodeID, alive(n.Discovery))
		}
	}
	if got := alive(intruder.Discovery); !sameIDs(got, "0bad") {
		t.Fatalf("intruder sees %v", got)
	}
}

func TestMessagesAndState(t *testing.T) {
	var mu sync.Mutex
	var merged []string
	a := startNode(t, "a1", "127.0.0.31", testKey, func(c *Config) {
		c.LocalState = func(bool) []byte { return []byte("state-of-a") }
	})
	b := startNode(t, "b2", "127.0.0.32", testKey, func(c *Config) {
		c.Peers = []string{a.Addr().String()}
		c.MergeRemoteState = func(buf []byte, join bool) { mu.Lock(); merged = append(merged, string(buf)); mu.Unlock() }
		c.NoBrick, c.StateInRAM = true, true
	})
	// b's standing is in its very first metadata: a never sees b alive without it.
	waitFor(t, 10*time.Second, "b alive at a", func() bool { return sameIDs(alive(a.Discovery), "a1", "b2") })
	for _, p := range a.Peers() {
		if want := p.ID == "b2"; p.NoBrick != want || p.StateInRAM != want {
			t.Errorf("a sees %s with NoBrick=%v StateInRAM=%v, want %v", p.ID, p.NoBrick, p.StateInRAM, want)
		}
	}
	waitFor(t, 10*time.Second, "b to merge a's state", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(merged) > 0 && merged[0] == "state-of-a"
	})
	if err := a.Send("b2", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-b.Messages():
		if m.From != "a1" || string(m.Body) != "hello" {
			t.Fatalf("got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("message not delivered")
	}
	if err := a.Send("zz", []byte("x")); err == nil {
		t.Fatal("send to unknown member succeeded")
	}
	if err := b.SetMeta(Meta{Phase: "formed", SwarmID: "s1", GlusterEpoch: member.FreshGluster}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b's metadata at a", func() bool {
		for _, p := range a.Peers() {
			if p.ID == "b2" && p.Meta.SwarmID == "s1" && p.GlusterEpoch == member.FreshGluster {
				return true
			}
		}
		return false
	})
	// SetMeta keeps the standing whatever the agent passes.
	for _, ps := range [][]Peer{a.Peers(), b.Peers()} {
		for _, p := range ps {
			if p.ID == "b2" && (!p.NoBrick || !p.StateInRAM || !p.Meta.NoBrick) {
				t.Errorf("b's standing lost after SetMeta: %+v", p)
			}
		}
	}
}

// TestFailureDetection uses the production timings: a crashed member must be seen down within 5 s
// (plus scheduling slack on a loaded 2-core test machine).
func TestFailureDetection(t *testing.T) {
	lan := func(c *Config) { c.Tuning = nil }
	a := startNode(t, "a1", "127.0.0.41", testKey, lan)
	seed := func(c *Config) { c.Tuning = nil; c.Peers = []string{a.Addr().String()} }
	b := startNode(t, "b2", "127.0.0.42", testKey, seed)
	c := startNode(t, "c3", "127.0.0.43", testKey, seed)
	waitFor(t, 15*time.Second, "3 members", func() bool {
		return sameIDs(alive(a.Discovery), "a1", "b2", "c3") && sameIDs(alive(b.Discovery), "a1", "b2", "c3")
	})
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, 12*time.Second, "c3 seen down by a1 and b2", func() bool {
		return sameIDs(alive(a.Discovery), "a1", "b2") && sameIDs(alive(b.Discovery), "a1", "b2")
	})
	t.Logf("crash detected after %s", took)
	for _, p := range a.Peers() {
		if p.ID == "c3" && p.Alive {
			t.Fatal("dead member still alive in Peers")
		}
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestBeaconsFormMembership: no seeds at all, only beacons (unicast to each loopback address, as broadcast
// does not work on lo); a node with another key beacons too and is ignored and logged.
func TestBeaconsFormMembership(t *testing.T) {
	port := freeUDPPort(t)
	ips := []string{"127.0.0.51", "127.0.0.52", "127.0.0.53", "127.0.0.54"}
	var targets []netip.AddrPort
	for _, ip := range ips {
		targets = append(targets, netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)))
	}
	beacon := func(ip string) func(*Config) {
		return func(c *Config) {
			c.Beacon = BeaconConfig{Listen: fmt.Sprintf("%s:%d", ip, port), Targets: targets, Interval: 100 * time.Millisecond}
		}
	}
	var nodes []testNode
	for i, id := range []string{"a1", "b2", "c3"} {
		nodes = append(nodes, startNode(t, id, ips[i], testKey, beacon(ips[i])))
	}
	startNode(t, "0bad", ips[3], bytes.Repeat([]byte{9}, 32), beacon(ips[3]))
	for _, n := range nodes {
		waitFor(t, 10*time.Second, "3 members on "+n.cfg.NodeID, func() bool { return sameIDs(alive(n.Discovery), "a1", "b2", "c3") })
	}
	waitFor(t, 5*time.Second, "the wrong-key beacon to be logged", func() bool {
		return strings.Contains(nodes[0].log.String(), "beacon ignored") && strings.Contains(nodes[0].log.String(), "MAC mismatch")
	})
}

// A key rotation's middle step: nodes send with different keys, each accepting the other's, and still form
// one membership, beacons and gossip alike.
func TestRotationAcceptsBothKeys(t *testing.T) {
	oldKey, newKey := testKey, bytes.Repeat([]byte{7}, 32)
	port := freeUDPPort(t)
	ips := []string{"127.0.0.61", "127.0.0.62"}
	var targets []netip.AddrPort
	for _, ip := range ips {
		targets = append(targets, netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)))
	}
	node := func(id, ip string, key []byte, accept ...[]byte) testNode {
		return startNode(t, id, ip, key, func(c *Config) {
			c.AcceptKeys = accept
			c.Beacon = BeaconConfig{Listen: fmt.Sprintf("%s:%d", ip, port), Targets: targets, Interval: 100 * time.Millisecond}
		})
	}
	a := node("a1", ips[0], newKey, oldKey) // step 2 done: sends with the new key
	b := node("b2", ips[1], oldKey, newKey) // step 1 only: sends with the old key
	for _, n := range []testNode{a, b} {
		waitFor(t, 10*time.Second, "2 members on "+n.cfg.NodeID, func() bool { return sameIDs(alive(n.Discovery), "a1", "b2") })
	}
}
