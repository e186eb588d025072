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

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
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
		if got := Role(ms[i].ID, ms, 9); got != want {
			t.Errorf("Role(rank %d) = %s, want %s", i, got, want)
		}
	}
	// Dead members keep their rank: roles must not reshuffle when someone fails.
	ms[0].Alive = false
	if Role(ms[7].ID, ms, 9) != swarm.NodeRoleWorker {
		t.Error("a dead member shifted ranks")
	}
	// Expected size 3 has 3 seats: a 4th node is a worker.
	if Role("zz", members(3), 3) != swarm.NodeRoleWorker || Role("zz", members(2), 3) != swarm.NodeRoleManager {
		t.Error("seats of a 3-node cluster: the 4th node must be a worker, the 3rd a manager")
	}
}

func TestSeats(t *testing.T) {
	for expected, want := range map[int]int{0: 1, 1: 1, 2: 1, 3: 3, 4: 3, 5: 5, 6: 5, 7: 7, 8: 7, 20: 7} {
		if got := Seats(expected); got != want {
			t.Errorf("Seats(%d) = %d, want %d", expected, got, want)
		}
	}
}

func TestJoinRole(t *testing.T) {
	ms := members(3)
	for _, tc := range []struct {
		name     string
		managers int
		want     swarm.NodeRole
	}{
		{"old record without a count: by rank", 0, swarm.NodeRoleManager},
		{"formation: one manager so far", 1, swarm.NodeRoleManager},
		{"every seat taken (a stale or dead manager inside): worker first", 3, swarm.NodeRoleWorker},
	} {
		if got := JoinRole(ms[1].ID, ms, 3, tc.managers); got != tc.want {
			t.Errorf("%s: JoinRole = %s, want %s", tc.name, got, tc.want)
		}
	}
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
	for _, n := range Promotions(nodes, ms, 9) {
		got = append(got, n.ID)
	}
	if want := []string{"n5", "n7"}; !slices.Equal(got, want) {
		t.Errorf("Promotions = %v, want %v (2 free seats of 7; n6 down, stranger unknown)", got, want)
	}
	// Expected size 3: three managers fill every seat, the rest stay workers.
	if got := Promotions(nodes, ms, 3); len(got) != 0 {
		t.Errorf("with 5 managers and 3 seats Promotions = %d nodes, want none", len(got))
	}
	// A demoted entry still leaving raft keeps its seat.
	three := []swarm.Node{
		swNode("a", "10.0.0.10", swarm.NodeRoleManager, swarm.NodeStateReady, swarm.ReachabilityReachable),
		swNode("b", "10.0.0.11", swarm.NodeRoleManager, swarm.NodeStateReady, swarm.ReachabilityReachable),
		swNode("old", "10.0.0.12", swarm.NodeRoleManager, swarm.NodeStateDown, swarm.ReachabilityUnreachable),
		swNode("new", "10.0.0.13", swarm.NodeRoleWorker, swarm.NodeStateReady, ""),
	}
	three[2].Spec.Role = swarm.NodeRoleWorker
	if got := Promotions(three, members(4), 3); len(got) != 0 {
		t.Errorf("promoted %v while the demoted entry is still in raft", got)
	}
	three[2].ManagerStatus = nil
	if got := Promotions(three, members(4), 3); len(got) != 1 || got[0].ID != "new" {
		t.Errorf("after the old entry left raft Promotions = %v, want [new]", got)
	}
	// Four members, three seats: the third by rank is alive and has not joined yet (it will as a manager), so
	// the fourth, in as a worker, waits; once the third is gone, the fourth takes the seat.
	ms4 := members(4)
	joining := []swarm.Node{
		swNode("m0", ms4[0].Addr.String(), swarm.NodeRoleManager, swarm.NodeStateReady, swarm.ReachabilityReachable),
		swNode("m1", ms4[1].Addr.String(), swarm.NodeRoleManager, swarm.NodeStateReady, swarm.ReachabilityReachable),
		swNode("w3", ms4[3].Addr.String(), swarm.NodeRoleWorker, swarm.NodeStateReady, ""),
	}
	if got := Promotions(joining, ms4, 4); len(got) != 0 {
		t.Errorf("promoted %v while the third member by rank is still joining", got)
	}
	ms4[2].Alive = false
	if got := Promotions(joining, ms4, 4); len(got) != 1 || got[0].ID != "w3" {
		t.Errorf("with the third member down Promotions = %v, want [w3]", got)
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
	s := &state.State{Inputs: state.Inputs{Formation: &state.Formation{
		SwarmID: "x", ManagerToken: "SWMTKN-m", WorkerToken: "SWMTKN-w", ManagerAddrs: []string{"10.0.0.10:2377"},
	}}, Observed: state.Observed{Self: ms[8], Members: ms}}
	changed, err := r.Reconcile(context.Background(), s)
	if err != nil || !changed {
		t.Fatalf("Reconcile = %v, %v; want changed, no error", changed, err)
	}
	if !s.Swarm.Active || !strings.HasPrefix(s.Status["swarm"], "worker") {
		t.Fatalf("after timed-out join: active %v status %q", s.Swarm.Active, s.Status["swarm"])
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
	s := &state.State{Inputs: state.Inputs{Expected: 3, Formation: &state.Formation{ManagerToken: "t", ManagerAddrs: []string{"10.0.0.10:2377"}}}, Observed: state.Observed{Self: ms[1], Members: ms}}
	if _, err := r.Reconcile(context.Background(), s); err == nil || !strings.Contains(err.Error(), "join") {
		t.Fatalf("err = %v, want a join error", err)
	}
}

func swNode(id, addr string, role swarm.NodeRole, state swarm.NodeState, reach swarm.Reachability) swarm.Node {
	n := swarm.Node{ID: id, Spec: swarm.NodeSpec{Role: role}, Status: swarm.NodeStatus{State: state, Addr: addr}}
	if role == swarm.NodeRoleManager {
		n.ManagerStatus = &swarm.ManagerStatus{Reachability: reach, Addr: addr + ":2377"}
	}
	return n
}

// inactiveAPI is a dockerd in no swarm; any write would hit the nil embedded interface and panic.
type inactiveAPI struct{ DockerAPI }

func (inactiveAPI) Info(context.Context) (system.Info, error) {
	return system.Info{Swarm: swarm.Info{LocalNodeState: swarm.LocalNodeStateInactive}}, nil
}

func TestReimagedInitialiserNeverInitsAgain(t *testing.T) {
	// The decided initialiser was reimaged: it learned the decision from metadata before its formation record
	// arrived. A member already reports a swarm node, so it must wait for the record, not init.
	ms := members(3)
	ms[1].SwarmNode = "nodeB"
	r := NewWithOptions(inactiveAPI{}, quiet(), Options{ReadyTimeout: time.Second, PollInterval: time.Millisecond})
	s := &state.State{Inputs: state.Inputs{Expected: 3, Initialiser: true}, Observed: state.Observed{Self: ms[0], Members: ms}}
	changed, err := r.Reconcile(context.Background(), s)
	if err != nil || changed || !strings.Contains(s.Status["swarm"], "already in a swarm") {
		t.Fatalf("changed=%v err=%v status %q", changed, err, s.Status["swarm"])
	}
	if s.Swarm.Node != member.NoSwarmNode {
		t.Errorf("SwarmNode = %q, want %q", s.Swarm.Node, member.NoSwarmNode)
	}
}

// errorStateAPI is dockerd after swarmkit gave up on a manager join: local node state "error" until a leave.
type errorStateAPI struct {
	DockerAPI
	state swarm.LocalNodeState
	left  bool
}

func (f *errorStateAPI) Info(context.Context) (system.Info, error) {
	return system.Info{Swarm: swarm.Info{NodeID: "me", LocalNodeState: f.state,
		Error: "manager stopped: can't initialize raft node: rpc error: code = Unknown desc = could not connect to prospective new cluster member using its advertised address"}}, nil
}

func (f *errorStateAPI) SwarmLeave(_ context.Context, force bool) error {
	f.left = force
	f.state = swarm.LocalNodeStateInactive
	return nil
}

func TestFailedJoinIsLeftAndRetried(t *testing.T) {
	ms := members(3) // addresses 10.0.0.10, .11, .12
	cases := []struct {
		name     string
		managers []string
		wantLeft bool
	}{
		{"not a ready manager of the formation: leave, join next pass", []string{"10.0.0.10:2377", "10.0.0.12:2377"}, true},
		{"a recorded manager in error: left alone", []string{"10.0.0.10:2377", "10.0.0.11:2377", "10.0.0.12:2377"}, false},
		{"no other manager recorded: left alone", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api := &errorStateAPI{state: swarm.LocalNodeStateError}
			r := NewWithOptions(api, quiet(), Options{ReadyTimeout: time.Second, PollInterval: time.Millisecond})
			s := &state.State{Inputs: state.Inputs{Expected: 3, Formation: &state.Formation{
				SwarmID: "x", ManagerToken: "t", ManagerAddrs: c.managers}}, Observed: state.Observed{Self: ms[1], Members: ms}}
			changed, err := r.Reconcile(context.Background(), s)
			if api.left != c.wantLeft {
				t.Fatalf("left = %v, want %v (changed %v, err %v)", api.left, c.wantLeft, changed, err)
			}
			if c.wantLeft && (err != nil || !changed) {
				t.Errorf("Reconcile = %v, %v; want changed, no error", changed, err)
			}
			if !c.wantLeft && err == nil {
				t.Errorf("a node left in error must report it")
			}
		})
	}
}

// A join that stays pending is verified pass after pass, and left once it has been pending for pendingMax:
// the reconciler's clock starts at the first pending pass, and the leave backs the next join off.
func TestPendingJoinIsLeftAfterPendingMax(t *testing.T) {
	ms := members(3)
	api := &errorStateAPI{state: swarm.LocalNodeStatePending}
	r := NewWithOptions(api, quiet(), Options{ReadyTimeout: time.Millisecond, PollInterval: time.Millisecond})
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	pass := func() (*state.State, error) {
		s := &state.State{Inputs: state.Inputs{Expected: 3, Formation: &state.Formation{
			SwarmID: "x", ManagerToken: "t", ManagerAddrs: []string{"10.0.0.10:2377"}}}, Observed: state.Observed{Self: ms[1], Members: ms}}
		_, err := r.Reconcile(context.Background(), s)
		return s, err
	}
	if _, err := pass(); err == nil || api.left {
		t.Fatalf("first pending pass: err %v, left %v; want the wait for active to fail, no leave", err, api.left)
	}
	now = now.Add(pendingMax - time.Second)
	if _, err := pass(); err == nil || api.left {
		t.Fatalf("pending just under pendingMax: err %v, left %v; want no leave", err, api.left)
	}
	now = now.Add(time.Second)
	s, err := pass()
	if err != nil || !api.left || !strings.Contains(s.Pending["swarm"], "left after a failed join") || r.joinFailures != 1 {
		t.Fatalf("pending for pendingMax: err %v, left %v, pending %q, failures %d; want a leave and a back-off", err, api.left, s.Pending["swarm"], r.joinFailures)
	}
}

// joinRecorder is an inactive dockerd that records the join token it was given (and then fails the join:
// only the choice of token matters here).
type joinRecorder struct {
	inactiveAPI
	tokens []string
}

func (f *joinRecorder) SwarmJoin(_ context.Context, req swarm.JoinRequest) error {
	f.tokens = append(f.tokens, req.JoinToken)
	return errors.New("test: join not carried out")
}

// A reimaged manager whose old entry still holds its seat in the record waits for the leader to free it and
// then joins as a manager (no promotion, no certificate renewal); if the seat stays taken for ownSeatWait it
// joins as a worker, as before.
func TestReimagedManagerWaitsForItsSeat(t *testing.T) {
	ms := members(3) // 10.0.0.10, .11, .12
	stale := &state.Formation{SwarmID: "x", ManagerToken: "M", WorkerToken: "W", Managers: 3,
		ManagerAddrs: []string{"10.0.0.10:2377", "10.0.0.11:2377", "10.0.0.12:2377"}}
	fresh := &state.Formation{SwarmID: "x", ManagerToken: "M", WorkerToken: "W", Managers: 2,
		ManagerAddrs: []string{"10.0.0.10:2377", "10.0.0.11:2377"}}
	newRec := func() (*Reconciler, *joinRecorder, *time.Time) {
		api := &joinRecorder{}
		r := NewWithOptions(api, quiet(), Options{ReadyTimeout: time.Millisecond, PollInterval: time.Millisecond})
		now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
		r.now = func() time.Time { return now }
		return r, api, &now
	}
	pass := func(r *Reconciler, f *state.Formation) *state.State {
		s := &state.State{Inputs: state.Inputs{Expected: 3, Formation: f}, Observed: state.Observed{Self: ms[2], Members: ms}}
		r.Reconcile(context.Background(), s) // the recorder fails every join: only its token is looked at
		return s
	}

	r, api, now := newRec()
	s := pass(r, stale)
	if len(api.tokens) != 0 || !strings.Contains(s.Status["swarm"], "still counts 10.0.0.12 as a manager") {
		t.Fatalf("seat still taken: joined with %v, status %q; want a wait", api.tokens, s.Status["swarm"])
	}
	*now = now.Add(time.Minute)
	pass(r, fresh)
	if !slices.Equal(api.tokens, []string{"M"}) {
		t.Fatalf("seat freed: joined with %v, want the manager token", api.tokens)
	}

	r, api, now = newRec()
	pass(r, stale)
	*now = now.Add(ownSeatWait - time.Second)
	pass(r, stale)
	if len(api.tokens) != 0 {
		t.Fatalf("joined with %v before ownSeatWait", api.tokens)
	}
	*now = now.Add(time.Second)
	pass(r, stale)
	if !slices.Equal(api.tokens, []string{"W"}) {
		t.Fatalf("seat still taken after ownSeatWait: joined with %v, want the worker token", api.tokens)
	}
}

// startingAPI is a dockerd that is still starting: Info fails until it has been called more than down times,
// then answers as a daemon in no swarm.
type startingAPI struct {
	inactiveAPI
	down, calls int
}

func (f *startingAPI) Info(ctx context.Context) (system.Info, error) {
	if f.calls++; f.calls <= f.down {
		return system.Info{}, errors.New("Cannot connect to the Docker daemon at unix:///var/run/docker.sock")
	}
	return f.inactiveAPI.Info(ctx)
}

// The agent starts beside dockerd. A node with swarm work waits for dockerd once and acts as soon as it answers;
// a node with none yet does not wait (nothing to act on), and after one wait a dead dockerd fails the pass at once.
func TestWaitsForStartingDockerdOnce(t *testing.T) {
	ms := members(3)
	ms[1].SwarmNode = "nodeB" // a swarm exists: the initialiser waits for its record and writes nothing
	opts := Options{ReadyTimeout: time.Second, PollInterval: time.Millisecond, StartWait: 5 * time.Second}

	api := &startingAPI{down: 3}
	r := NewWithOptions(api, quiet(), opts)
	idle := &state.State{Inputs: state.Inputs{Expected: 3}, Observed: state.Observed{Self: ms[2], Members: ms}}
	if _, err := r.Reconcile(context.Background(), idle); err != nil || api.calls != 1 || !strings.Contains(idle.Pending["swarm"], "waiting for dockerd") {
		t.Fatalf("no swarm work: err %v after %d Info calls, pending %q; want a wait for dockerd after 1 call", err, api.calls, idle.Pending["swarm"])
	}
	s := &state.State{Inputs: state.Inputs{Expected: 3, Initialiser: true}, Observed: state.Observed{Self: ms[0], Members: ms}}
	if _, err := r.Reconcile(context.Background(), s); err != nil || api.calls != 4 || !strings.Contains(s.Status["swarm"], "already in a swarm") {
		// calls 2-4: the failed first look, one failed poll, the answer
		t.Fatalf("initialiser: err %v after %d Info calls, status %q; want it to wait for dockerd (4 calls) and go on", err, api.calls, s.Status["swarm"])
	}

	api.calls, api.down = 0, 1000
	if _, err := r.Reconcile(context.Background(), &state.State{Inputs: state.Inputs{Expected: 3, Initialiser: true}, Observed: state.Observed{Self: ms[0], Members: ms}}); err == nil || api.calls != 1 {
		t.Fatalf("dockerd down after it answered: err %v after %d Info calls, want an error after 1", err, api.calls)
	}

	r = NewWithOptions(&startingAPI{down: 1000}, quiet(), Options{PollInterval: time.Millisecond, StartWait: 20 * time.Millisecond})
	_, err := r.Reconcile(context.Background(), &state.State{Inputs: state.Inputs{Expected: 3, Initialiser: true}, Observed: state.Observed{Self: ms[0], Members: ms}})
	if err == nil || !strings.Contains(err.Error(), "dockerd answering: not reached within 20ms") {
		t.Fatalf("dockerd never answers: err %v", err)
	}
}

// socketActivatedAPI is dockerd's socket while dockerd starts: a call waits until dockerd answers or the
// caller gives up.
type socketActivatedAPI struct{ inactiveAPI }

func (socketActivatedAPI) Info(ctx context.Context) (system.Info, error) {
	<-ctx.Done()
	return system.Info{}, ctx.Err()
}

// A pass with no swarm work does not wait on a starting dockerd's socket: it gives up after
// dockerdFirstAnswer, so the pass ends and the next one sees the election's outcome.
func TestNoSwarmWorkDoesNotWaitOnStartingDockerd(t *testing.T) {
	ms := members(3)
	r := NewWithOptions(socketActivatedAPI{}, quiet(), Options{PollInterval: time.Millisecond})
	s := &state.State{Inputs: state.Inputs{Expected: 3}, Observed: state.Observed{Self: ms[2], Members: ms}}
	if _, err := r.Reconcile(context.Background(), s); err != nil || !strings.Contains(s.Pending["swarm"], "waiting for dockerd") {
		t.Fatalf("err = %v, pending %q; want a wait for dockerd once the brief look ran out", err, s.Pending["swarm"])
	}
}

// A failed join is not retried at once: each failure doubles the wait (with jitter), a successful join
// clears it, and the status says when the next try goes.
func TestFailedJoinBacksOff(t *testing.T) {
	api := &joinFailsAPI{joinTimeoutAPI{state: swarm.LocalNodeStateInactive}}
	r := NewWithOptions(api, quiet(), Options{ReadyTimeout: time.Second, PollInterval: time.Millisecond})
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	ms := members(3)
	s := func() *state.State {
		return &state.State{Inputs: state.Inputs{Expected: 3, Formation: &state.Formation{ManagerToken: "t", WorkerToken: "w",
			ManagerAddrs: []string{"10.0.0.10:2377"}}}, Observed: state.Observed{Self: ms[1], Members: ms}}
	}
	if _, err := r.Reconcile(context.Background(), s()); err == nil {
		t.Fatal("first join: want its error")
	}
	for i, wantMin := range []time.Duration{joinBackoffBase, 2 * joinBackoffBase, 4 * joinBackoffBase} {
		wait := r.retryJoinAt.Sub(now)
		if wait < wantMin || wait > wantMin+wantMin/4 {
			t.Fatalf("after failure %d: next join in %s, want %s..%s", i+1, wait, wantMin, wantMin+wantMin/4)
		}
		st := s()
		now = now.Add(wait - time.Second)
		if changed, err := r.Reconcile(context.Background(), st); err != nil || changed || !strings.Contains(st.Status["swarm"], "joining again at") {
			t.Fatalf("during the back-off: changed=%v err=%v status %q; want a wait", changed, err, st.Status["swarm"])
		}
		now = now.Add(time.Second)
		if _, err := r.Reconcile(context.Background(), s()); err == nil {
			t.Fatal("join after the back-off: want its error")
		}
	}
	// A join that goes through clears the count.
	ok := NewWithOptions(&joinTimeoutAPI{state: swarm.LocalNodeStateInactive}, quiet(), Options{ReadyTimeout: 5 * time.Second,
		ControlTimeout: 50 * time.Millisecond, PollInterval: time.Millisecond})
	ok.joinFailures, ok.lastJoinErr = 3, "earlier"
	ms9 := members(9)
	if _, err := ok.Reconcile(context.Background(), &state.State{Inputs: state.Inputs{Formation: &state.Formation{
		SwarmID: "x", ManagerToken: "m", WorkerToken: "w", ManagerAddrs: []string{"10.0.0.10:2377"},
	}}, Observed: state.Observed{Self: ms9[8], Members: ms9}}); err != nil || ok.joinFailures != 0 {
		t.Errorf("after a join that went through: err %v, failures %d; want none", err, ok.joinFailures)
	}
	if got := joinBackoff(100); got < joinBackoffMax || got > joinBackoffMax+joinBackoffMax/4 {
		t.Errorf("joinBackoff(100) = %s, want the cap %s (+ jitter)", got, joinBackoffMax)
	}
}
