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
		name      string
		s         *state.State
		info      swarm.Info
		seatSince time.Time
		want      Step
	}{
		{name: "active: verify", s: st(0, nil, true), info: swarm.Info{LocalNodeState: swarm.LocalNodeStateActive},
			want: Step{Kind: StepVerify}},
		{name: "a join under way (ours from before a restart): verify it, never start another", s: st(1, record(1, "10.0.0.10:2377"), false),
			info: swarm.Info{LocalNodeState: swarm.LocalNodeStatePending}, want: Step{Kind: StepVerify}},
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
			s: st(2, record(3, "10.0.0.10:2377", "10.0.0.11:2377", "10.0.0.12:2377"), false), info: inactive, seatSince: now.Add(-ownSeatWait),
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
			got := PlanLocal(tt.s, tt.info, tt.seatSince, now)
			if (got.Err == nil) != (tt.want.Err == nil) || got.Err != nil && got.Err.Error() != tt.want.Err.Error() {
				t.Fatalf("err %v, want %v", got.Err, tt.want.Err)
			}
			got.Err, tt.want.Err = nil, nil
			if got.Kind != tt.want.Kind || got.Wait != tt.want.Wait || got.Role != tt.want.Role || got.Token != tt.want.Token ||
				strings.Join(got.Remotes, ",") != strings.Join(tt.want.Remotes, ",") || got.SeatHeld != tt.want.SeatHeld {
				t.Fatalf("PlanLocal = %+v\nwant        %+v", got, tt.want)
			}
		})
	}
}

// TestJoinQueue: five nodes, one swarm initialised by 00. Manager joins go at most H+1 at a time (H: the
// record's ready managers), joins under way first, then by rank.
func TestJoinQueue(t *testing.T) {
	record := func(addrs ...string) *state.Formation {
		return &state.Formation{SwarmID: "sw", ManagerToken: "m", WorkerToken: "w", ManagerAddrs: addrs, Managers: len(addrs)}
	}
	st := func(self int, f *state.Formation, mut ...func([]member.Member)) *state.State {
		m := members(5)
		for _, f := range mut {
			f(m)
		}
		return &state.State{Inputs: state.Inputs{Expected: 5, Formation: f}, Observed: state.Observed{Self: m[self], Members: m}}
	}
	one := record("10.0.0.10:2377")
	tests := []struct {
		name string
		s    *state.State
		want []string // nil: self's turn
	}{
		{name: "one ready manager: the two lowest ranks join", s: st(2, one)},
		{name: "one ready manager: the third waits", s: st(3, one), want: []string{"01", "02"}},
		{name: "a join under way goes first, whatever its rank", s: st(1, one, func(m []member.Member) { m[4].SwarmNode = "n4" }),
			want: nil},
		{name: "a join under way takes a slot from a lower rank", s: st(2, one, func(m []member.Member) { m[4].SwarmNode = "n4" }),
			want: []string{"04", "01"}},
		{name: "a member in no swarm is not under way", s: st(2, one, func(m []member.Member) { m[4].SwarmNode = member.NoSwarmNode })},
		{name: "dead members take no slot", s: st(3, one, func(m []member.Member) { m[1].Alive = false })},
		{name: "three ready managers: the last two join together", s: st(4, record("10.0.0.10:2377", "10.0.0.11:2377", "10.0.0.12:2377"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := joinQueue(tt.s); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("joinQueue = %v, want %v", got, tt.want)
			}
		})
	}
	// Through PlanLocal: the waiting node says for whom.
	got := PlanLocal(st(3, one), swarm.Info{LocalNodeState: swarm.LocalNodeStateInactive}, time.Time{}, time.Now())
	if want := "manager joins go 2 at a time (1 ready managers): waiting for 01, 02 to join first"; got.Kind != StepWait || got.Wait != want {
		t.Fatalf("PlanLocal = %+v, want wait %q", got, want)
	}
}
