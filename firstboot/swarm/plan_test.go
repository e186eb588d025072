package swarm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// TestPlanLocal is the table of what a node does about its own membership, from its local swarm state and the
// State: every branch of PlanLocal, by example.
func TestPlanLocal(t *testing.T) {
	ms := members(3) // 00 .10, 01 .11, 02 .12
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	record := func(managers int, addrs ...string) *state.Formation {
		return &state.Formation{SwarmID: "sw", Initialiser: "00", ManagerToken: "SWMTKN-m", WorkerToken: "SWMTKN-w",
			ManagerAddrs: addrs, Managers: managers}
	}
	st := func(self int, f *state.Formation, initialiser bool, mut ...func([]member.Member)) *state.State {
		m := append([]member.Member(nil), ms...)
		for _, f := range mut {
			f(m)
		}
		return &state.State{Inputs: state.Inputs{Expected: 3, Formation: f, Initialiser: initialiser},
			Observed: state.Observed{Self: m[self], Members: m}}
	}
	inactive := swarm.Info{LocalNodeState: swarm.LocalNodeStateInactive}
	tests := []struct {
		name  string
		s     *state.State
		info  swarm.Info
		since Since
		want  Step
	}{
		{name: "active: verify", s: st(0, nil, true), info: swarm.Info{LocalNodeState: swarm.LocalNodeStateActive},
			want: Step{Kind: StepVerify}},
		{name: "a join under way (ours from before a restart): verify it, never start another", s: st(1, record(1, "10.0.0.10:2377"), false),
			info: swarm.Info{LocalNodeState: swarm.LocalNodeStatePending}, want: Step{Kind: StepVerify}},
		{name: "a join pending for pendingMax, not a recorded manager: leave (its seat may hold the leader's quorum)",
			s: st(1, record(1, "10.0.0.10:2377"), false), info: swarm.Info{LocalNodeState: swarm.LocalNodeStatePending},
			since: Since{Pending: now.Add(-pendingMax)}, want: Step{Kind: StepLeave, Why: "join pending since 2026-01-02T02:59:05Z"}},
		{name: "a join pending for less: verify", s: st(1, record(1, "10.0.0.10:2377"), false),
			info: swarm.Info{LocalNodeState: swarm.LocalNodeStatePending}, since: Since{Pending: now.Add(-pendingMax + time.Second)},
			want: Step{Kind: StepVerify}},
		{name: "a recorded manager pending for long: never left", s: st(1, record(2, "10.0.0.10:2377", "10.0.0.11:2377"), false),
			info: swarm.Info{LocalNodeState: swarm.LocalNodeStatePending}, since: Since{Pending: now.Add(-time.Hour)},
			want: Step{Kind: StepVerify}},
		{name: "no formation, not the initialiser: wait", s: st(1, nil, false), info: inactive,
			want: Step{Kind: StepWait, Wait: "waiting for formation"}},
		{name: "no formation, the initialiser: init", s: st(0, nil, true), info: inactive, want: Step{Kind: StepInit}},
		{name: "a reimaged initialiser whose peers are in a swarm waits for the record, never inits again",
			s: st(0, nil, true, func(m []member.Member) { m[1].SwarmNode = "nodeB" }), info: inactive,
			want: Step{Kind: StepWait, Wait: "waiting for the formation record: member 01 is already in a swarm"}},
		{name: "a peer without a swarm node does not stop the init",
			s: st(0, nil, true, func(m []member.Member) { m[1].SwarmNode = member.NoSwarmNode }), info: inactive,
			want: Step{Kind: StepInit}},
		{name: "formation with a manager seat free: join as a manager through the others", s: st(1, record(1, "10.0.0.10:2377"), false),
			info: inactive, want: Step{Kind: StepJoin, Role: swarm.NodeRoleManager, Token: "SWMTKN-m", Remotes: []string{"10.0.0.10:2377"}}},
		{name: "every seat taken: join as a worker", s: st(2, record(3, "10.0.0.10:2377", "10.0.0.11:2377"), false),
			info: inactive, want: Step{Kind: StepJoin, Role: swarm.NodeRoleWorker, Token: "SWMTKN-w", Remotes: []string{"10.0.0.10:2377", "10.0.0.11:2377"}}},
		{name: "the record still holds this machine's old seat: wait for the leader to free it",
			s: st(2, record(3, "10.0.0.10:2377", "10.0.0.11:2377", "10.0.0.12:2377"), false), info: inactive,
			want: Step{Kind: StepWait, SeatHeld: true, Wait: "the formation record still counts 10.0.0.12 as a manager (the old install of this machine): waiting since 2026-01-02T03:04:05Z for the leader to free the seat, to join as a manager"}},
		{name: "the old seat still held after ownSeatWait: join as a worker",
			s: st(2, record(3, "10.0.0.10:2377", "10.0.0.11:2377", "10.0.0.12:2377"), false), info: inactive, since: Since{Seat: now.Add(-ownSeatWait)},
			want: Step{Kind: StepJoin, SeatHeld: true, Role: swarm.NodeRoleWorker, Token: "SWMTKN-w", Remotes: []string{"10.0.0.10:2377", "10.0.0.11:2377"}}},
		{name: "a failed join (error, not a recorded manager): leave", s: st(2, record(2, "10.0.0.10:2377", "10.0.0.11:2377"), false),
			info: swarm.Info{LocalNodeState: swarm.LocalNodeStateError, Error: "could not connect"}, want: Step{Kind: StepLeave}},
		{name: "a recorded manager in error is reported, never left", s: st(1, record(2, "10.0.0.10:2377", "10.0.0.11:2377"), false),
			info: swarm.Info{LocalNodeState: swarm.LocalNodeStateError, Error: "raft"},
			want: Step{Kind: StepFail, Err: errors.New("swarm: local node state error: raft")}},
		{name: "locked: reported", s: st(1, record(1, "10.0.0.10:2377"), false), info: swarm.Info{LocalNodeState: swarm.LocalNodeStateLocked},
			want: Step{Kind: StepFail, Err: errors.New("swarm: local node state locked: ")}},
		{name: "no address yet", s: &state.State{Inputs: state.Inputs{Expected: 3, Initialiser: true}, Observed: state.Observed{Self: member.Member{ID: "00"}}},
			info: inactive, want: Step{Kind: StepFail, Err: errors.New("swarm: this node has no cluster address yet")}},
		{name: "the record names only this node", s: st(0, record(1, "10.0.0.10:2377"), false), info: inactive,
			want: Step{Kind: StepFail, Err: errors.New("swarm: formation lists no manager other than this node")}},
		{name: "the record lacks the token", s: st(1, &state.Formation{ManagerAddrs: []string{"10.0.0.10:2377"}, Managers: 1}, false), info: inactive,
			want: Step{Kind: StepFail, Err: errors.New("swarm: formation carries no manager token")}},
		{name: "a state swarmkit may add later", s: st(0, nil, true), info: swarm.Info{LocalNodeState: "frozen"},
			want: Step{Kind: StepFail, Err: errors.New(`swarm: unknown local node state "frozen"`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PlanLocal(tt.s, tt.info, tt.since, now)
			if (got.Err == nil) != (tt.want.Err == nil) || got.Err != nil && got.Err.Error() != tt.want.Err.Error() {
				t.Fatalf("err %v, want %v", got.Err, tt.want.Err)
			}
			got.Err, tt.want.Err = nil, nil
			if got.Kind != tt.want.Kind || got.Wait != tt.want.Wait || got.Role != tt.want.Role || got.Token != tt.want.Token ||
				strings.Join(got.Remotes, ",") != strings.Join(tt.want.Remotes, ",") || got.SeatHeld != tt.want.SeatHeld || got.Why != tt.want.Why {
				t.Fatalf("PlanLocal = %+v\nwant        %+v", got, tt.want)
			}
		})
	}
}

// TestJoinQueue: five nodes, one swarm initialised by 00. Manager joins go at most 2H-1-T at a time (H ready
// managers, T manager entries), the swarm's second manager alone; joins under way first, then by rank.
func TestJoinQueue(t *testing.T) {
	record := func(entries int, addrs ...string) *state.Formation {
		return &state.Formation{SwarmID: "sw", ManagerToken: "m", WorkerToken: "w", ManagerAddrs: addrs, Managers: entries}
	}
	st := func(self int, f *state.Formation, mut ...func([]member.Member)) *state.State {
		m := members(5)
		for _, f := range mut {
			f(m)
		}
		return &state.State{Inputs: state.Inputs{Expected: 5, Formation: f}, Observed: state.Observed{Self: m[self], Members: m}}
	}
	one := record(1, "10.0.0.10:2377")
	two := record(2, "10.0.0.10:2377", "10.0.0.11:2377")
	three := record(3, "10.0.0.10:2377", "10.0.0.11:2377", "10.0.0.12:2377")
	underWay := func(i int) func([]member.Member) { return func(m []member.Member) { m[i].SwarmNode = "n" } }
	tests := []struct {
		name  string
		s     *state.State
		ahead []string
		turn  bool
	}{
		{name: "the second manager joins alone: the lowest rank", s: st(1, one), turn: true},
		{name: "the second manager joins alone: the others wait", s: st(2, one), ahead: []string{"01"}},
		{name: "a join under way goes first, whatever its rank, and holds the one turn", s: st(1, one, underWay(4)), ahead: []string{"04"}},
		{name: "a member in no swarm is not under way", s: st(1, one, func(m []member.Member) { m[4].SwarmNode = member.NoSwarmNode }), turn: true},
		{name: "dead members take no turn", s: st(2, one, func(m []member.Member) { m[1].Alive = false }), turn: true},
		{name: "two ready of two: one join", s: st(2, two), turn: true},
		{name: "two ready of two: one join, the next waits", s: st(3, two), ahead: []string{"02"}},
		{name: "two ready of three entries (a join under way or failed): no join", s: st(2, record(3, "10.0.0.10:2377", "10.0.0.11:2377"))},
		{name: "three ready of three: two joins", s: st(4, three), ahead: []string{"03"}, turn: true},
		{name: "three ready of four entries: one join", s: st(4, record(4, "10.0.0.10:2377", "10.0.0.11:2377", "10.0.0.12:2377")), ahead: []string{"03"}},
		{name: "a record without the count: the ready managers are the entries", s: st(2, record(0, "10.0.0.10:2377", "10.0.0.11:2377")), turn: true},
		{name: "entries of joins that never registered hold no raft vote", s: st(2, func() *state.Formation {
			f := record(11, "10.0.0.10:2377", "10.0.0.11:2377")
			f.RaftMembers = 2
			return f
		}()), turn: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ahead, turn := joinQueue(tt.s)
			if strings.Join(ahead, ",") != strings.Join(tt.ahead, ",") || turn != tt.turn {
				t.Fatalf("joinQueue = %v, %v; want %v, %v", ahead, turn, tt.ahead, tt.turn)
			}
		})
	}
	// Through PlanLocal: the waiting node says for whom, and why.
	inactive := swarm.Info{LocalNodeState: swarm.LocalNodeStateInactive}
	got := PlanLocal(st(2, one), inactive, Since{}, time.Now())
	if want := "waiting for 01 to join first: 1 of 1 raft members ready, so 1 manager join(s) at a time keep raft's quorum"; got.Kind != StepWait || got.Wait != want {
		t.Fatalf("PlanLocal = %+v, want wait %q", got, want)
	}
	got = PlanLocal(st(0, record(3, "10.0.0.11:2377", "10.0.0.12:2377")), inactive, Since{}, time.Now())
	if want := "waiting for the leader to remove failed joins: 2 of 3 raft members ready, so 0 manager join(s) at a time keep raft's quorum"; got.Kind != StepWait || got.Wait != want {
		t.Fatalf("PlanLocal = %+v, want wait %q", got, want)
	}
}
