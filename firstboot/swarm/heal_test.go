package swarm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

func TestPlanCleanup(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	mem := func(id string, alive bool, swarmNode string) member.Member {
		return member.Member{ID: id, Hostname: "kiln-" + id, Addr: netip.MustParseAddr("10.0.0." + map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"}[id]), Alive: alive, SwarmNode: swarmNode}
	}
	node := func(id, host string, role swarm.NodeRole, state swarm.NodeState) swarm.Node {
		reach := swarm.ReachabilityReachable
		if state != swarm.NodeStateReady {
			reach = swarm.ReachabilityUnreachable
		}
		n := swNode(id, "10.0.0.9", role, state, reach)
		n.Description.Hostname = host
		return n
	}
	leader := node("A", "kiln-a", swarm.NodeRoleManager, swarm.NodeStateReady)
	leader.ManagerStatus.Leader = true
	b := node("B", "kiln-b", swarm.NodeRoleManager, swarm.NodeStateReady)
	cDown := node("C", "kiln-c", swarm.NodeRoleManager, swarm.NodeStateDown)
	cDemoted := cDown
	cDemoted.Spec.Role = swarm.NodeRoleWorker
	cGone := cDemoted
	cGone.ManagerStatus = nil
	c2Worker := node("C2", "kiln-c", swarm.NodeRoleWorker, swarm.NodeStateReady)
	cBusy := node("C", "kiln-c", swarm.NodeRoleManager, swarm.NodeStateUnknown)
	cBusy.ManagerStatus.Reachability = swarm.ReachabilityReachable
	dWorker := node("D", "kiln-d", swarm.NodeRoleWorker, swarm.NodeStateReady)
	// A manager join that never completed: a seat in the spec, no description, no raft membership.
	ghost := node("G", "", swarm.NodeRoleManager, swarm.NodeStateDown)
	ghost.ManagerStatus = nil
	ghostDemoted := ghost
	ghostDemoted.Spec.Role = swarm.NodeRoleWorker
	// A join that never registered and never went Down: swarm can keep such an entry Unknown for good.
	ghostUnknown := node("G", "", swarm.NodeRoleWorker, swarm.NodeStateUnknown)
	ghostUnknown.ManagerStatus = nil
	ghostUnknownManager := node("G", "", swarm.NodeRoleManager, swarm.NodeStateUnknown)
	ghostUnknownManager.ManagerStatus = nil
	ghostNew := map[string]time.Time{"G": t0.Add(-time.Minute)}
	ghostOld := map[string]time.Time{"G": t0.Add(-3 * time.Minute)}

	long := map[string]time.Time{"C": t0.Add(-11 * time.Minute)}
	short := map[string]time.Time{"C": t0.Add(-time.Minute)}

	tests := []struct {
		name    string
		nodes   []swarm.Node
		members []member.Member
		down    map[string]time.Time
		want    []string // "kind id"
	}{
		{"healthy", []swarm.Node{leader, b, node("C", "kiln-c", swarm.NodeRoleManager, swarm.NodeStateReady)},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C")}, nil, nil},
		{"node back after reboot: same swarm node ID, still Down for a moment", []swarm.Node{leader, b, cDown},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C")}, long, nil},
		{"node just booted, swarm node not reported yet", []swarm.Node{leader, b, cDown},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "")}, long, nil},
		{"reimaged, in no swarm yet, old entry Down for a minute: demoted", []swarm.Node{leader, b, cDown},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, member.NoSwarmNode)}, short, []string{"demote C"}},
		{"in no swarm by its gossip, entry Down for 10 s only: keep (the gossip may lag a completed join)", []swarm.Node{leader, b, cDown},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, member.NoSwarmNode)}, map[string]time.Time{"C": t0.Add(-10 * time.Second)}, nil},
		{"reimaged, joined as worker C2, old entry Down for 10 s: demoted at once", []swarm.Node{leader, b, cDown, c2Worker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C2")}, map[string]time.Time{"C": t0.Add(-10 * time.Second)}, []string{"demote C"}},
		{"founder busy after init, gossip still says no swarm node, entry unknown and reachable: keep", []swarm.Node{leader, b, cBusy},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, member.NoSwarmNode)}, short, nil},
		{"reimaged, joined as worker C2: stale entry demoted", []swarm.Node{leader, b, cDown, c2Worker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C2")}, short, []string{"demote C"}},
		{"demoted, still in raft: wait", []swarm.Node{leader, b, cDemoted, c2Worker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C2")}, short, nil},
		{"demoted and out of raft: remove", []swarm.Node{leader, b, cGone, c2Worker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C2")}, short, []string{"remove C"}},
		{"dead manager inside the grace period: keep", []swarm.Node{leader, b, cDown, dWorker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", false, "C"), mem("d", true, "D")}, short, nil},
		{"dead manager past the grace period, newcomer waiting: demote", []swarm.Node{leader, b, cDown, dWorker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", false, "C"), mem("d", true, "D")}, long, []string{"demote C (departed)"}},
		{"dead manager past the grace period, nobody to take the seat: keep", []swarm.Node{leader, b, cDown},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", false, "C")}, long, nil},
		{"dead worker past the grace period: remove", []swarm.Node{leader, b, cGone},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B")}, long, []string{"remove C (departed)"}},
		{"never the leader itself", []swarm.Node{leader}, []member.Member{mem("a", true, "Z")}, nil, nil},
		{"failed manager join (never registered), down 1 min: keep, it may still be registering", []swarm.Node{leader, b, ghost, c2Worker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C2")}, ghostNew, nil},
		{"failed manager join, down 3 min: demote (its seat blocks the promotion of the node's retry)", []swarm.Node{leader, b, ghost, c2Worker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C2")}, ghostOld, []string{"demote G"}},
		{"failed join demoted: remove", []swarm.Node{leader, b, ghostDemoted, c2Worker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C2")}, ghostOld, []string{"remove G"}},
		{"failed join left Unknown, 3 min: remove", []swarm.Node{leader, b, ghostUnknown, c2Worker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C2")}, ghostOld, []string{"remove G"}},
		{"failed manager join left Unknown, 3 min: demote", []swarm.Node{leader, b, ghostUnknownManager, c2Worker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C2")}, ghostOld, []string{"demote G"}},
		{"failed join left Unknown, 1 min: keep, it may still be registering", []swarm.Node{leader, b, ghostUnknown, c2Worker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "C2")}, ghostNew, nil},
		{"slow join (never registered, Unknown 3 min) of an alive member that reports it as its swarm node: keep", []swarm.Node{leader, b, ghostUnknown},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "G")}, ghostOld, nil},
		{"slow manager join of an alive member that reports it: keep its seat too", []swarm.Node{leader, b, ghostUnknownManager},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", true, "G")}, ghostOld, nil},
		{"the member that reported it is dead: the failed-join rule applies", []swarm.Node{leader, b, ghostUnknown, c2Worker},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B"), mem("c", false, "G")}, ghostOld, []string{"remove G"}},
		{"failed join, never seen down by this leader: keep", []swarm.Node{leader, b, ghost},
			[]member.Member{mem("a", true, "A"), mem("b", true, "B")}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := PlanCleanup(CleanupInput{Self: "A", Nodes: tc.nodes, Members: tc.members, DownSince: tc.down,
				Now: t0, ReplaceAfter: 10 * time.Minute, Expected: 3})
			var kinds []string
			for _, c := range got {
				k := fmt.Sprintf("%s %s", c.Kind, c.Node.ID)
				if c.Departed {
					k += " (departed)" // its removal rotates the join tokens
				}
				kinds = append(kinds, k)
				if c.Reason == "" || c.Hostname == "" {
					t.Errorf("%s without reason or hostname", c)
				}
			}
			if strings.Join(kinds, ",") != strings.Join(tc.want, ",") {
				t.Errorf("PlanCleanup = %v, want %v", kinds, tc.want)
			}
		})
	}
}

func TestPlanCleanupKeepsQuorum(t *testing.T) {
	// 5 managers, 2 unreachable stale ones: demoting one leaves 3 reachable of 4 (fine); one per pass.
	var nodes []swarm.Node
	var ms []member.Member
	for i, id := range []string{"A", "B", "C", "D", "E"} {
		state := swarm.NodeStateReady
		if i >= 3 {
			state = swarm.NodeStateDown
		}
		reach := swarm.ReachabilityReachable
		if state == swarm.NodeStateDown {
			reach = swarm.ReachabilityUnreachable
		}
		n := swNode(id, fmt.Sprintf("10.0.0.%d", i+1), swarm.NodeRoleManager, state, reach)
		n.Description.Hostname = "h" + id
		nodes = append(nodes, n)
		ms = append(ms, member.Member{ID: strings.ToLower(id), Hostname: "h" + id, Alive: true, SwarmNode: member.NoSwarmNode})
	}
	now := time.Now()
	down := map[string]time.Time{"D": now.Add(-time.Minute), "E": now.Add(-time.Minute)}
	got := PlanCleanup(CleanupInput{Self: "A", Nodes: nodes, Members: ms, DownSince: down, Now: now, ReplaceAfter: time.Minute, Expected: 5})
	if len(got) != 1 || got[0].Kind != Demote {
		t.Fatalf("PlanCleanup = %v, want exactly one demotion", got)
	}
	// A stale manager entry that is still reachable (should not happen: not Ready) is never demoted when that
	// would leave fewer reachable managers than a majority.
	nodes[3].Status.State = swarm.NodeStateUnknown
	nodes[3].ManagerStatus.Reachability = swarm.ReachabilityReachable
	nodes[1].ManagerStatus.Reachability = swarm.ReachabilityUnreachable
	nodes[2].ManagerStatus.Reachability = swarm.ReachabilityUnreachable
	for _, c := range PlanCleanup(CleanupInput{Self: "A", Nodes: nodes[:4], Members: ms, DownSince: down, Now: now, ReplaceAfter: time.Minute, Expected: 5}) {
		if c.Node.ID == "D" {
			t.Errorf("demoted D although only 2 of 4 managers are reachable: %s", c)
		}
	}
}

func TestQuorumReportAndNoQuorum(t *testing.T) {
	since := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ms := []member.Member{{ID: "a", Addr: netip.MustParseAddr("10.0.0.1"), Alive: true}, {ID: "b", Addr: netip.MustParseAddr("10.0.0.2")}}
	rep := QuorumReport([]swarm.Peer{{Addr: "10.0.0.1:2377"}, {Addr: "10.0.0.2:2377"}, {Addr: "10.0.0.3:2377"}}, ms, since)
	if !strings.Contains(rep, "no quorum: 2 of 3 managers unreachable since 2026-01-01T12:00:00Z") || !strings.Contains(rep, "recover --force-new-cluster --lost b`") {
		t.Errorf("QuorumReport = %q", rep)
	}
	ms[1].Alive = true // a majority alive: a leaderless moment, not lost quorum; no recover advice
	rep = QuorumReport([]swarm.Peer{{Addr: "10.0.0.1:2377"}, {Addr: "10.0.0.2:2377"}, {Addr: "10.0.0.3:2377"}}, ms, since)
	if !strings.Contains(rep, "2 of 3 managers are alive members: waiting for raft") || strings.Contains(rep, "recover") {
		t.Errorf("QuorumReport with a majority alive = %q", rep)
	}
	if !NoQuorum(errors.New("Error response from daemon: rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few managers are online.")) {
		t.Error("docker's no-leader error not recognised")
	}
	if NoQuorum(errors.New("connection refused")) || NoQuorum(nil) {
		t.Error("other errors taken for quorum loss")
	}
}

// TestStillbornSeat is the table of when a leaderless manager may take its swarm over alone: only two seats,
// the other one's machine alive and reporting no swarm node (or another one) than the seat's.
func TestStillbornSeat(t *testing.T) {
	self := swarm.Peer{NodeID: "nA", Addr: "10.0.0.10:2377"}
	seat := swarm.Peer{NodeID: "nB", Addr: "10.0.0.11:2377"}
	third := swarm.Peer{NodeID: "nC", Addr: "10.0.0.12:2377"}
	with := func(f func([]member.Member)) []member.Member {
		ms := members(3) // 00 .10, 01 .11, 02 .12
		ms[0].SwarmNode = "nA"
		f(ms)
		return ms
	}
	tests := []struct {
		name    string
		remote  []swarm.Peer
		members []member.Member
		want    bool
	}{
		{"the joiner left its pending join: no swarm node", []swarm.Peer{self, seat}, with(func(m []member.Member) { m[1].SwarmNode = member.NoSwarmNode }), true},
		{"the seat's machine is another node now (reimaged, joined elsewhere)", []swarm.Peer{seat, self}, with(func(m []member.Member) { m[1].SwarmNode = "nX" }), true},
		{"the joiner still reports the seat's node: its join may go on", []swarm.Peer{self, seat}, with(func(m []member.Member) { m[1].SwarmNode = "nB" }), false},
		{"the seat's machine is not alive: the operator's recover decides", []swarm.Peer{self, seat}, with(func(m []member.Member) { m[1].SwarmNode, m[1].Alive = member.NoSwarmNode, false }), false},
		{"the seat's machine has not reported (dockerd silent)", []swarm.Peer{self, seat}, with(func(m []member.Member) {}), false},
		{"no member at the seat's address", []swarm.Peer{self, {NodeID: "nB", Addr: "10.0.0.99:2377"}}, with(func(m []member.Member) {}), false},
		{"three seats: a live member may hold entries this node lacks", []swarm.Peer{self, seat, third}, with(func(m []member.Member) { m[1].SwarmNode, m[2].SwarmNode = member.NoSwarmNode, member.NoSwarmNode }), false},
		{"this node is not among the two", []swarm.Peer{seat, third}, with(func(m []member.Member) { m[1].SwarmNode = member.NoSwarmNode }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := StillbornSeat("nA", tt.remote, tt.members)
			if ok != tt.want || ok && got != seat {
				t.Fatalf("StillbornSeat = %+v, %v; want %v", got, ok, tt.want)
			}
		})
	}
}

// tokenAPI is a leader's dockerd for heal: it removes nodes and records token rotations.
type tokenAPI struct {
	DockerAPI
	removed []string
	flags   []swarm.UpdateFlags
}

func (f *tokenAPI) NodeRemove(_ context.Context, id string, _ swarm.NodeRemoveOptions) error {
	f.removed = append(f.removed, id)
	return nil
}
func (f *tokenAPI) SwarmInspect(context.Context) (swarm.Swarm, error) {
	return swarm.Swarm{ClusterInfo: swarm.ClusterInfo{Meta: swarm.Meta{Version: swarm.Version{Index: 7}}}}, nil
}
func (f *tokenAPI) SwarmUpdate(_ context.Context, v swarm.Version, _ swarm.Spec, fl swarm.UpdateFlags) error {
	if v.Index != 7 {
		return fmt.Errorf("update at version %d, want the inspected 7", v.Index)
	}
	f.flags = append(f.flags, fl)
	return nil
}

// Removing the entry of a machine gone for good rotates both join tokens; removing a reimaged machine's stale
// entry (the same machine, back under a new swarm node) does not.
func TestHealRotatesTokensAfterADeparture(t *testing.T) {
	leader := swNode("A", "10.0.0.1", swarm.NodeRoleManager, swarm.NodeStateReady, swarm.ReachabilityReachable)
	leader.ManagerStatus.Leader = true
	gone := swNode("C", "10.0.0.3", swarm.NodeRoleWorker, swarm.NodeStateDown, "")
	gone.Description.Hostname = "kiln-c"
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		members    []member.Member
		wantRotate bool
	}{
		{"departed", []member.Member{{ID: "a", Hostname: "kiln-a", Alive: true, SwarmNode: "A"}}, true},
		{"reimaged", []member.Member{{ID: "a", Hostname: "kiln-a", Alive: true, SwarmNode: "A"},
			{ID: "c", Hostname: "kiln-c", Alive: true, SwarmNode: "C2"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &tokenAPI{}
			r := NewWithOptions(api, quiet(), Options{})
			r.now = func() time.Time { return t0 }
			r.downSince["C"] = t0.Add(-time.Hour)
			s := &state.State{Inputs: state.Inputs{Expected: 3, ReplaceAfter: 10 * time.Minute}, Observed: state.Observed{Members: tc.members}}
			if _, err := r.heal(context.Background(), s, "A", []swarm.Node{leader, gone}); err != nil {
				t.Fatal(err)
			}
			rotated := len(api.flags) == 1 && api.flags[0].RotateWorkerToken && api.flags[0].RotateManagerToken
			if len(api.removed) != 1 || rotated != tc.wantRotate {
				t.Fatalf("removed %v, token updates %+v; want C removed, rotation %v", api.removed, api.flags, tc.wantRotate)
			}
		})
	}
}
