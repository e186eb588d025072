package swarm

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/run"
	"github.com/kiln-project/kiln/internal/testenv"
)

// node is one private dockerd in its own network namespace.
type node struct {
	m   member.Member
	cli *client.Client
}

// needDocker is testenv.NeedDocker: KILN_DOCKER_TESTS=1 asks for the real-dockerd tests.
func needDocker(t testing.TB) { testenv.NeedDocker(t) }

func sh(t testing.TB, name string, args ...string) {
	t.Helper()
	if _, err := run.Cmd(context.Background(), name, args...); err != nil {
		t.Fatal(err)
	}
}

// newLAN creates a hub namespace with a bridge and n node namespaces wired to it by veth pairs, node i at
// 10.99.9.(11+i)/24, and starts a dockerd in each. dockerd runs under `nsenter --net` (not `ip netns exec`,
// whose private /sys hides the cgroup mounts dockerd needs). Everything is stopped and removed in t.Cleanup.
func newLAN(t testing.TB, n int) []node {
	t.Helper()
	base, err := os.MkdirTemp("", "ksw") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	var nodes []node
	for i, h := range testenv.LAN(t, "ksw", netip.MustParsePrefix("10.99.9.0/24"), n) {
		cli := testenv.Dockerd(t, h.NS, filepath.Join(base, strconv.Itoa(i)))
		id := string(rune('a' + i))
		nodes = append(nodes, node{m: member.Member{ID: id, Hostname: "kiln-" + id, Addr: h.Addr, Alive: true}, cli: cli})
	}
	return nodes
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testOptions() Options {
	return Options{ReadyTimeout: 60 * time.Second, ControlTimeout: 5 * time.Second, PollInterval: 200 * time.Millisecond}
}

func reconcile(t testing.TB, r *Reconciler, s *state.State, wantChanged bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	changed, err := r.Reconcile(ctx, s)
	if err != nil {
		t.Fatalf("%s: reconcile: %v", s.Self.ID, err)
	}
	if changed != wantChanged {
		t.Fatalf("%s: reconcile changed = %v, want %v (status %q)", s.Self.ID, changed, wantChanged, s.Status["swarm"])
	}
}

// nodeByAddr finds the swarm node entry advertising addr, as a manager sees it.
func nodeByAddr(t testing.TB, cli *client.Client, addr netip.Addr) swarm.Node {
	t.Helper()
	nodes, err := cli.NodeList(context.Background(), swarm.NodeListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Status.Addr == addr.String() {
			return n
		}
	}
	t.Fatalf("no swarm node advertises %s", addr)
	return swarm.Node{}
}

func TestSwarmFormationRealDockerd(t *testing.T) {
	needDocker(t)
	nodes := newLAN(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	members := []member.Member{a.m, b.m, c.m}
	state := func(n node, initialiser bool, f *state.Formation) *state.State {
		return &state.State{Inputs: state.Inputs{Expected: 3, Initialiser: initialiser, Formation: f}, Observed: state.Observed{Self: n.m, Members: members}}
	}
	ra := NewWithOptions(a.cli, quiet(), testOptions())

	// A node that did not win the election and has no formation waits.
	rc := NewWithOptions(c.cli, quiet(), testOptions())
	sc := state(c, false, nil)
	reconcile(t, rc, sc, false)
	if sc.Swarm.Announce != nil || sc.Swarm.Active {
		t.Fatalf("waiting node announced %+v / active %v", sc.Swarm.Announce, sc.Swarm.Active)
	}

	// Init on the initialiser: it announces the formation.
	sa := state(a, true, nil)
	reconcile(t, ra, sa, true)
	f := sa.Swarm.Announce
	if f == nil || f.SwarmID == "" || !strings.HasPrefix(f.ManagerToken, "SWMTKN-") || !strings.HasPrefix(f.WorkerToken, "SWMTKN-") {
		t.Fatalf("initialiser announced %+v", f)
	}
	if f.Initialiser != "a" || len(f.ManagerAddrs) != 1 || f.ManagerAddrs[0] != "10.99.9.11:2377" {
		t.Fatalf("announce = %+v, want initialiser a, managers [10.99.9.11:2377]", f)
	}
	// Idempotent, and restart-safe: a fresh reconciler on the same daemon changes nothing.
	sa = state(a, true, f)
	reconcile(t, ra, sa, false)
	reconcile(t, NewWithOptions(a.cli, quiet(), testOptions()), state(a, true, f), false)

	// B joins as a manager; verified from A's node list, not from the join call.
	rb := NewWithOptions(b.cli, quiet(), testOptions())
	sb := state(b, false, f)
	reconcile(t, rb, sb, true)
	nb := nodeByAddr(t, a.cli, b.m.Addr)
	if nb.Spec.Role != swarm.NodeRoleManager || nb.Status.State != swarm.NodeStateReady ||
		nb.ManagerStatus == nil || nb.ManagerStatus.Reachability != swarm.ReachabilityReachable {
		t.Fatalf("B as seen by A: role %s state %s manager %+v", nb.Spec.Role, nb.Status.State, nb.ManagerStatus)
	}
	if sb.Swarm.Announce == nil || sb.Swarm.Announce.SwarmID != f.SwarmID || len(sb.Swarm.Announce.ManagerAddrs) != 2 || sb.Swarm.Announce.Initialiser != "a" {
		t.Fatalf("B announces %+v", sb.Swarm.Announce)
	}
	reconcile(t, rb, state(b, false, f), false)
	reconcile(t, NewWithOptions(b.cli, quiet(), testOptions()), state(b, false, f), false)

	// C arrives as a worker (as if it had joined when the cluster was larger); the leader promotes it
	// because its rank makes it a manager.
	ctx := context.Background()
	err := c.cli.SwarmJoin(ctx, swarm.JoinRequest{
		ListenAddr: "10.99.9.13:2377", AdvertiseAddr: "10.99.9.13", RemoteAddrs: []string{"10.99.9.11:2377"}, JoinToken: f.WorkerToken,
	})
	if err != nil {
		t.Fatal(err)
	}
	reconcile(t, rc, state(c, false, f), false) // a worker: active, nothing to do on its side
	leader := ra
	if n := nodeByAddr(t, a.cli, a.m.Addr); n.ManagerStatus == nil || !n.ManagerStatus.Leader {
		leader = rb
		reconcile(t, leader, state(b, false, f), true)
	} else {
		reconcile(t, leader, state(a, true, f), true)
	}
	if n := nodeByAddr(t, a.cli, c.m.Addr); n.Spec.Role != swarm.NodeRoleManager {
		t.Fatalf("C not promoted: role %s", n.Spec.Role)
	}
	sc = state(c, false, f)
	reconcile(t, rc, sc, false)
	if !sc.Swarm.Active || sc.Swarm.Announce == nil || len(sc.Swarm.Announce.ManagerAddrs) != 3 {
		t.Fatalf("C after promotion: active %v announce %+v", sc.Swarm.Active, sc.Swarm.Announce)
	}
	// Exactly one manager's pass says it leads (State.Swarm.Leader, what the stack reconcilers act on): the
	// one the node list calls the leader.
	var leaders []string
	for i, r := range []*Reconciler{ra, rb, rc} {
		s := state(nodes[i], i == 0, f)
		if _, err := r.Reconcile(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		if s.Swarm.Leader {
			leaders = append(leaders, nodes[i].m.ID)
			if n := nodeByAddr(t, a.cli, nodes[i].m.Addr); n.ManagerStatus == nil || !n.ManagerStatus.Leader {
				t.Errorf("%s's pass says it leads, its node list entry says %+v", nodes[i].m.ID, n.ManagerStatus)
			}
		}
	}
	if len(leaders) != 1 {
		t.Fatalf("passes that say they lead: %v, want exactly one", leaders)
	}

	// A formation naming another swarm is refused, never "fixed" by leaving.
	bogus := *f
	bogus.SwarmID = "0123456789abcdefghijklmno"
	_, err = ra.Reconcile(ctx, state(a, true, &bogus))
	if !errors.Is(err, ErrForeignSwarm) {
		t.Fatalf("foreign formation: err = %v, want ErrForeignSwarm", err)
	}
	if info, err := a.cli.Info(ctx); err != nil || info.Swarm.LocalNodeState != swarm.LocalNodeStateActive {
		t.Fatalf("A after foreign formation: state %s err %v", info.Swarm.LocalNodeState, err)
	}
}
