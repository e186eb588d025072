package swarm

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// StepKind names what this node does about its own swarm membership in one pass.
type StepKind string

const (
	// StepVerify: the node is active, or a join is under way (perhaps ours from before a restart: wait for it
	// rather than start another); verify it, then do the manager's work.
	StepVerify StepKind = "verify"
	// StepWait: nothing to do until something changes; Step.Wait says what the node waits for.
	StepWait StepKind = "wait"
	// StepInit: swarm init, on the decided initialiser when no formation exists.
	StepInit StepKind = "init"
	// StepJoin: swarm join of the formation's swarm with Step.Role's token through Step.Remotes.
	StepJoin StepKind = "join"
	// StepLeave: leave after a failed join; the next pass joins again.
	StepLeave StepKind = "leave"
	// StepFail: a state kiln does not repair by itself; Step.Err says which.
	StepFail StepKind = "fail"
)

// Step is PlanLocal's decision.
type Step struct {
	Kind StepKind
	// Wait is what a StepWait waits for (status text).
	Wait string
	// Why is a StepLeave's reason when it is not dockerd's error state (a join pending too long).
	Why string
	// Err is a StepFail's error.
	Err error
	// Role, Token and Remotes are a StepJoin's (Remotes: the record's managers, this node's own address left
	// out).
	Role    swarm.NodeRole
	Token   string
	Remotes []string
	// SeatHeld reports that the record still counts this address as a manager while this node would join as
	// a worker (see ownSeatWait); the reconciler remembers since when.
	SeatHeld bool
}

// ownSeatWait bounds how long a reimaged manager waits for the leader to free its old seat before it joins
// as a worker (see PlanLocal).
const ownSeatWait = 3 * time.Minute

// Since holds when PlanLocal's timed conditions were first seen (zero: not seen). The reconciler keeps it in
// memory only: a restarted agent starts the clocks again, which delays a remedy by one bound and never
// causes one.
type Since struct {
	// Seat is when SeatHeld was first reported.
	Seat time.Time
	// Pending is when the local node was first seen pending (a join under way).
	Pending time.Time
}

// pendingMax bounds how long a join that made this node no recorded manager may stay pending before it is
// left. A manager join whose raft transport never reached the leader (seen on a starved TCG guest: "failed to
// register member … context deadline exceeded", then "unrecognized member ID" on every heartbeat) stays
// pending for good while its seat keeps the leader from a quorum; healthy joins finish pending within a minute
// even there.
const pendingMax = 5 * time.Minute

// PlanLocal decides this node's next step from its local swarm state (info) and the State: pure, so every
// branch is table-tested. since holds the timed conditions' first sightings; now is the clock.
func PlanLocal(s *state.State, info swarm.Info, since Since, now time.Time) Step {
	switch info.LocalNodeState {
	case swarm.LocalNodeStatePending:
		if !since.Pending.IsZero() && now.Sub(since.Pending) >= pendingMax && notRecordedManager(s) {
			// Leaving gives the seat up; the machine then reports no swarm node, which is what lets the
			// only other raft member take the swarm over alone (StillbornSeat) when the seat broke its quorum.
			return Step{Kind: StepLeave, Why: "join pending since " + since.Pending.UTC().Format(time.RFC3339)}
		}
		return Step{Kind: StepVerify}
	case swarm.LocalNodeStateActive:
		return Step{Kind: StepVerify}
	case swarm.LocalNodeStateError, swarm.LocalNodeStateLocked:
		if failedJoin(s, info) {
			// A manager join that swarmkit gave up on (under load: "can't initialize raft node: could not
			// connect to prospective new cluster member") leaves dockerd in "error" for good, and the leader
			// has already dropped the half-added member. Leaving clears it.
			return Step{Kind: StepLeave}
		}
		return Step{Kind: StepFail, Err: fmt.Errorf("swarm: local node state %s: %s", info.LocalNodeState, info.Error)}
	case swarm.LocalNodeStateInactive:
		return planForm(s, since.Seat, now)
	}
	return Step{Kind: StepFail, Err: fmt.Errorf("swarm: unknown local node state %q", info.LocalNodeState)}
}

// planForm is PlanLocal for an inactive node: init, join, or wait.
func planForm(s *state.State, seatSince, now time.Time) Step {
	if !s.Self.Addr.IsValid() {
		return Step{Kind: StepFail, Err: errors.New("swarm: this node has no cluster address yet")}
	}
	addr := s.Self.Addr.String()
	if s.Formation == nil {
		if !s.Initialiser {
			return Step{Kind: StepWait, Wait: "waiting for formation"}
		}
		for _, m := range s.Members {
			if m.ID != s.Self.ID && m.Alive && m.SwarmNode != "" && m.SwarmNode != member.NoSwarmNode {
				// A member is already in a swarm: this initialiser was reimaged (its formation record is gone
				// with /var) and must join that swarm once the record arrives, never init another.
				return Step{Kind: StepWait, Wait: "waiting for the formation record: member " + m.ID + " is already in a swarm"}
			}
		}
		return Step{Kind: StepInit}
	}
	var remotes []string
	ownSeat := false // the record counts this address as a manager
	for _, a := range s.Formation.ManagerAddrs {
		if h, _, err := net.SplitHostPort(a); err == nil && h == addr {
			ownSeat = true // ourselves, e.g. a reimaged initialiser rejoining its own cluster
			continue
		}
		remotes = append(remotes, a)
	}
	if len(remotes) == 0 {
		return Step{Kind: StepFail, Err: errors.New("swarm: formation lists no manager other than this node")}
	}
	step := Step{Kind: StepJoin, Role: JoinRole(s.Self.ID, s.Members, s.Expected, s.Formation.Managers), Remotes: remotes}
	if step.Role == swarm.NodeRoleManager {
		if ahead, turn := joinQueue(s); !turn {
			who := "the leader to remove failed joins"
			if len(ahead) > 0 {
				who = strings.Join(ahead, ", ") + " to join first"
			}
			h, t := len(s.Formation.ManagerAddrs), raftMembers(s.Formation)
			return Step{Kind: StepWait, Wait: fmt.Sprintf("waiting for %s: %d of %d raft members ready, so %d manager join(s) at a time keep raft's quorum",
				who, h, max(t, h), joinSlots(h, t))}
		}
	}
	if step.Role == swarm.NodeRoleWorker && ownSeat && Role(s.Self.ID, s.Members, s.Expected) == swarm.NodeRoleManager {
		// The record still counts this address as a manager: this machine was one before its disk was
		// replaced, and that old entry holds the seat. The leader removes it (PlanCleanup) and publishes a
		// record without it, usually within a minute; joining now instead takes the worker path and a
		// promotion, whose certificate renewal can keep timing out for many minutes on loaded managers. So
		// wait for the fresh record, for ownSeatWait at most; then join as a worker.
		step.SeatHeld = true
		if seatSince.IsZero() {
			seatSince = now
		}
		if now.Sub(seatSince) < ownSeatWait {
			return Step{Kind: StepWait, SeatHeld: true, Wait: fmt.Sprintf("the formation record still counts %s as a manager (the old install of this machine): waiting since %s for the leader to free the seat, to join as a manager",
				addr, seatSince.UTC().Format(time.RFC3339))}
		}
	}
	step.Token = s.Formation.ManagerToken
	if step.Role == swarm.NodeRoleWorker {
		step.Token = s.Formation.WorkerToken
	}
	if step.Token == "" {
		return Step{Kind: StepFail, Err: fmt.Errorf("swarm: formation carries no %s token", step.Role)}
	}
	return step
}

// Role returns the role self should have: a manager among the first Seats(expected) members by ID, else a
// worker. All known members count (alive or not), so a member's failure does not reshuffle everyone's role.
func Role(self string, members []member.Member, expected int) swarm.NodeRole {
	if rank(self, members) < Seats(expected) {
		return swarm.NodeRoleManager
	}
	return swarm.NodeRoleWorker
}

func rank(id string, members []member.Member) int {
	ids := make([]string, 0, len(members)+1)
	for _, m := range members {
		ids = append(ids, m.ID)
	}
	if !slices.Contains(ids, id) {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	return slices.Index(ids, id)
}

// failedJoin tells a join that ended in dockerd's "error" state from a broken manager of the cluster: the
// formation record names ready managers, and this node is not one of them. A recorded manager in error is
// left alone (reported): leaving would drop a raft member the cluster may still count on.
func failedJoin(s *state.State, info swarm.Info) bool {
	return info.LocalNodeState == swarm.LocalNodeStateError && notRecordedManager(s)
}

// notRecordedManager reports whether the formation names managers and this node is not among them: a join of
// this node that has not completed can be given up without giving up a seat the cluster counts on.
func notRecordedManager(s *state.State) bool {
	if s.Formation == nil || !s.Self.Addr.IsValid() {
		return false
	}
	self := net.JoinHostPort(s.Self.Addr.String(), strconv.Itoa(Port))
	others := 0
	for _, a := range s.Formation.ManagerAddrs {
		if a == self {
			return false
		}
		others++
	}
	return others > 0
}

// joinQueue reports whether it is self's turn to join as a manager, and the members whose joins go first.
//
// A manager join adds a raft member before that member is up, and a join that fails on a loaded machine can
// leave its member behind until the leader removes it (PlanCleanup); raft then counts it in the quorum. With
// H ready managers and T raft members (the record's ManagerAddrs and RaftMembers, else Managers in a record
// without that count: T includes joins under way and failed ones), k more joins keep the quorum within the ready managers while floor((T+k)/2)+1 <= H, that
// is k <= 2H-1-T. So a join never costs the swarm its leader, whichever joins fail; five TCG guests joining at
// once did lose it. The one exception is the swarm's second manager (H = T = 1): no join is safe then, and
// one must go. Turns go to joins under way first (they report a swarm node), then by rank, which every node
// computes alike from the same gossip.
func joinQueue(s *state.State) (ahead []string, turn bool) {
	ready := map[string]bool{}
	for _, a := range s.Formation.ManagerAddrs {
		if h, _, err := net.SplitHostPort(a); err == nil {
			ready[h] = true
		}
	}
	type joiner struct {
		id       string
		underWay bool
	}
	var q []joiner
	for _, m := range s.Members {
		if m.ID == s.Self.ID || !m.Alive || !m.Addr.IsValid() || ready[m.Addr.String()] || Role(m.ID, s.Members, s.Expected) != swarm.NodeRoleManager {
			continue
		}
		q = append(q, joiner{id: m.ID, underWay: m.SwarmNode != "" && m.SwarmNode != member.NoSwarmNode})
	}
	q = append(q, joiner{id: s.Self.ID})
	slices.SortStableFunc(q, func(a, b joiner) int {
		if a.underWay != b.underWay {
			if a.underWay {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	slots := joinSlots(len(s.Formation.ManagerAddrs), raftMembers(s.Formation))
	for i, j := range q {
		if j.id == s.Self.ID {
			return ahead, i < slots
		}
		ahead = append(ahead, j.id)
	}
	return ahead, false
}

// joinSlots is how many manager joins may go at once with ready managers and manager entries in all (see
// joinQueue).
func joinSlots(ready, entries int) int {
	entries = max(entries, ready) // a record without the count
	if ready == 1 && entries == 1 {
		return 1
	}
	return max(2*ready-1-entries, 0)
}

// raftMembers is the record's raft member count, or its manager entries in a record without that count (an
// overcount: joins then wait longer, never lose the quorum).
func raftMembers(f *state.Formation) int {
	if f.RaftMembers > 0 {
		return f.RaftMembers
	}
	return f.Managers
}
