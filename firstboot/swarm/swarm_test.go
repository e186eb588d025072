package swarm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"

	"github.com/kiln-project/kiln/firstboot"
	"github.com/kiln-project/kiln/firstboot/member"
)

func members(n int) []member.Member {
	var ms []member.Member
	for i := range n {
		ms = append(ms, member.Member{ID: fmt.Sprintf("%02d", i), Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + i)}), Alive: true})
	}
	return ms
}

func TestRole(t *testing.T) {
	ms := members(9)
	for i, want := range []swarm.NodeRole{"manager", "manager", "manager", "manager", "manager", "manager", "manager", "worker", "worker"} {
		if got := Role(ms[i].ID, ms); got != want {
			t.Errorf("Role(rank %d) = %s, want %s", i, got, want)
		}
	}
	// Dead members keep their rank: roles must not reshuffle when someone fails.
	ms[0].Alive = false
	if Role(ms[7].ID, ms) != swarm.NodeRoleWorker {
		t.Error("a dead member shifted ranks")
	}
	// A node not (yet) in the member list is ranked as if it were.
	if Role("zz", members(3)) != swarm.NodeRoleManager {
		t.Error("4th node of 3 known members should be a manager")
	}
}

func swNode(id, addr string, role swarm.NodeRole, state swarm.NodeState, reach swarm.Reachability) swarm.Node {
	n := swarm.Node{ID: id, Spec: swarm.NodeSpec{Role: role}, Status: swarm.NodeStatus{State: state, Addr: addr}}
	if role == swarm.NodeRoleManager {
		n.ManagerStatus = &swarm.ManagerStatus{Reachability: reach, Addr: addr + ":2377"}
	}
	return n
}

func TestPromotions(t *testing.T) {
	ms := members(9)
	var nodes []swarm.Node
	for i, m := range ms {
		role := swarm.NodeRoleWorker
		if i < 5 {
			role = swarm.NodeRoleManager
		}
		nodes = append(nodes, swNode(fmt.Sprint("n", i), m.Addr.String(), role, swarm.NodeStateReady, swarm.ReachabilityReachable))
	}
	nodes[6].Status.State = swarm.NodeStateDown // not ready: wait for it
	nodes = append(nodes, swNode("stranger", "10.9.9.9", swarm.NodeRoleWorker, swarm.NodeStateReady, ""))
	var got []string
	for _, n := range Promotions(nodes, ms) {
		got = append(got, n.ID)
	}
	if want := []string{"n5"}; !slices.Equal(got, want) {
		t.Errorf("Promotions = %v, want %v (n6 down, n7/n8 rank ≥ 7, stranger unknown)", got, want)
	}
	// Never beyond MaxManagers, even if more members rank as managers.
	for i := range nodes[:5] {
		nodes[i].Spec.Role = swarm.NodeRoleManager
	}
	nodes = append(nodes, swNode("m9", "10.0.0.99", swarm.NodeRoleManager, swarm.NodeStateReady, swarm.ReachabilityReachable),
		swNode("m10", "10.0.0.98", swarm.NodeRoleManager, swarm.NodeStateReady, swarm.ReachabilityReachable))
	if got := Promotions(nodes, ms); len(got) != 0 {
		t.Errorf("with 7 managers Promotions = %d nodes, want none", len(got))
	}
}

func TestManagerAddrs(t *testing.T) {
	nodes := []swarm.Node{
		swNode("b", "10.0.0.12", swarm.NodeRoleManager, swarm.NodeStateReady, swarm.ReachabilityReachable),
		swNode("a", "10.0.0.11", swarm.NodeRoleManager, swarm.NodeStateReady, swarm.ReachabilityReachable),
		swNode("c", "10.0.0.13", swarm.NodeRoleManager, swarm.NodeStateDown, swarm.ReachabilityUnreachable),
		swNode("w", "10.0.0.14", swarm.NodeRoleWorker, swarm.NodeStateReady, ""),
	}
	if got, want := ManagerAddrs(nodes), []string{"10.0.0.11:2377", "10.0.0.12:2377"}; !slices.Equal(got, want) {
		t.Errorf("ManagerAddrs = %v, want %v", got, want)
	}
}

// joinTimeoutAPI behaves like dockerd when a join outlasts its 20 s wait: SwarmJoin returns an error while the
// node goes on joining (pending, then active as a worker).
type joinTimeoutAPI struct {
	DockerAPI
	state swarm.LocalNodeState
	polls int
}

func (f *joinTimeoutAPI) Info(context.Context) (system.Info, error) {
	if f.state == swarm.LocalNodeStatePending {
		if f.polls++; f.polls > 2 {
			f.state = swarm.LocalNodeStateActive
		}
	}
	return system.Info{Swarm: swarm.Info{NodeID: "me", LocalNodeState: f.state, RemoteManagers: []swarm.Peer{{Addr: "10.0.0.11:2377"}}}}, nil
}

func (f *joinTimeoutAPI) SwarmJoin(context.Context, swarm.JoinRequest) error {
	f.state = swarm.LocalNodeStatePending
	return errors.New("Timeout was reached before node joined. The attempt to join the swarm will continue in the background.")
}

func TestJoinTimeoutIsJudgedByObservedState(t *testing.T) {
	api := &joinTimeoutAPI{state: swarm.LocalNodeStateInactive}
	r := NewWithOptions(api, quiet(), Options{ReadyTimeout: 5 * time.Second, ControlTimeout: 50 * time.Millisecond, PollInterval: time.Millisecond})
	ms := members(9)
	s := &firstboot.State{Self: ms[8], Members: ms, Formation: &firstboot.Formation{
		SwarmID: "x", ManagerToken: "SWMTKN-m", WorkerToken: "SWMTKN-w", ManagerAddrs: []string{"10.0.0.10:2377"},
	}}
	changed, err := r.Reconcile(context.Background(), s)
	if err != nil || !changed {
		t.Fatalf("Reconcile = %v, %v; want changed, no error", changed, err)
	}
	if !s.SwarmActive || !strings.HasPrefix(s.Status["swarm"], "worker") {
		t.Fatalf("after timed-out join: active %v status %q", s.SwarmActive, s.Status["swarm"])
	}
}

// joinFailsAPI fails the join and stays inactive: that is an error.
type joinFailsAPI struct{ joinTimeoutAPI }

func (f *joinFailsAPI) SwarmJoin(context.Context, swarm.JoinRequest) error {
	return errors.New("rpc error: code = Unavailable")
}

func TestJoinFailureLeavingInactiveIsError(t *testing.T) {
	api := &joinFailsAPI{joinTimeoutAPI{state: swarm.LocalNodeStateInactive}}
	r := NewWithOptions(api, quiet(), Options{ReadyTimeout: time.Second, PollInterval: time.Millisecond})
	ms := members(3)
	s := &firstboot.State{Self: ms[1], Members: ms, Formation: &firstboot.Formation{ManagerToken: "t", ManagerAddrs: []string{"10.0.0.10:2377"}}}
	if _, err := r.Reconcile(context.Background(), s); err == nil || !strings.Contains(err.Error(), "join") {
		t.Fatalf("err = %v, want a join error", err)
	}
}
