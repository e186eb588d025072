package election

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func view(ids ...string) View { return View{Alive: ids} }

func TestMajority(t *testing.T) {
	for _, c := range []struct{ n, q int }{{1, 1}, {2, 2}, {3, 2}, {4, 3}, {5, 3}, {7, 4}} {
		if got := Majority(c.n); got != c.q {
			t.Errorf("Majority(%d) = %d, want %d", c.n, got, c.q)
		}
	}
}

func TestTickEligibility(t *testing.T) {
	cases := []struct {
		name string
		id   string
		v    View
		p    Persistent
		want bool
	}{
		{"lowest with majority", "a", view("a", "b"), Persistent{}, true},
		{"lowest with all", "a", view("a", "b", "c"), Persistent{}, true},
		{"not lowest", "b", view("a", "b", "c"), Persistent{}, false},
		{"no majority", "a", view("a"), Persistent{}, false},
		{"self not in view", "a", view("b", "c"), Persistent{}, false},
		{"formation announced", "a", View{Alive: []string{"a", "b", "c"}, Formed: true}, Persistent{}, false},
		{"already decided", "a", view("a", "b", "c"), Persistent{Decided: "b"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := New(c.id, 3, c.p, Config{})
			out := n.Tick(t0, c.v)
			if got := len(out) > 0; got != c.want {
				t.Fatalf("proposed = %v (%v), want %v", got, out, c.want)
			}
			if c.want {
				for _, m := range out {
					if m.Kind != Prepare || m.Ballot != (Ballot{1, c.id}) || m.From != c.id {
						t.Fatalf("bad prepare %+v", m)
					}
				}
				if !n.Dirty() || n.Persistent().MaxRound != 1 {
					t.Fatalf("round not persisted: %+v", n.Persistent())
				}
			}
		})
	}
}

func TestAcceptorPrepare(t *testing.T) {
	lease := t0.Add(10 * time.Second)
	cases := []struct {
		name   string
		p      Persistent
		m      Msg
		v      View
		now    time.Time
		want   Kind
		reason string
	}{
		{"fresh grants lowest", Persistent{}, Msg{Kind: Prepare, From: "a", Ballot: Ballot{1, "a"}}, view("a", "b", "c"), t0, Promise, ""},
		{"refuses non-lowest", Persistent{}, Msg{Kind: Prepare, From: "b", Ballot: Ballot{1, "b"}}, view("a", "b", "c"), t0, Reject, "not the lowest id in view"},
		{"refuses lower ballot", Persistent{Promised: Ballot{5, "a"}}, Msg{Kind: Prepare, From: "a", Ballot: Ballot{4, "a"}}, view("a", "b"), t0, Reject, "promised a higher ballot"},
		{"re-grants duplicate", Persistent{Promised: Ballot{5, "a"}, LeaseHolder: "a", LeaseUntil: lease}, Msg{Kind: Prepare, From: "a", Ballot: Ballot{5, "a"}}, view("a", "b"), t0, Promise, ""},
		{"renews holder", Persistent{Promised: Ballot{5, "a"}, LeaseHolder: "a", LeaseUntil: lease}, Msg{Kind: Prepare, From: "a", Ballot: Ballot{6, "a"}}, view("a", "b"), t0, Promise, ""},
		{"lease blocks other", Persistent{Promised: Ballot{5, "b"}, LeaseHolder: "b", LeaseUntil: lease}, Msg{Kind: Prepare, From: "a", Ballot: Ballot{6, "a"}}, view("a", "b"), t0, Reject, "lease held by b"},
		{"expired lease frees", Persistent{Promised: Ballot{5, "b"}, LeaseHolder: "b", LeaseUntil: lease}, Msg{Kind: Prepare, From: "a", Ballot: Ballot{6, "a"}}, view("a", "b"), lease, Promise, ""},
		{"formed refuses", Persistent{}, Msg{Kind: Prepare, From: "a", Ballot: Ballot{1, "a"}}, View{Alive: []string{"a", "b"}, Formed: true}, t0, Reject, "formation already announced"},
		{"decided answers", Persistent{Decided: "c"}, Msg{Kind: Prepare, From: "a", Ballot: Ballot{1, "a"}}, view("a", "b"), t0, Decided, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := New("b", 3, c.p, Config{LeaseTTL: 10 * time.Second})
			out := n.Handle(c.now, c.m, c.v)
			if len(out) != 1 || out[0].Kind != c.want || out[0].Reason != c.reason || out[0].To != c.m.From {
				t.Fatalf("got %+v, want one %v (%q) to %s", out, c.want, c.reason, c.m.From)
			}
			p := n.Persistent()
			switch c.want {
			case Promise:
				if p.Promised != c.m.Ballot || p.LeaseHolder != c.m.From || !p.LeaseUntil.Equal(c.now.Add(10*time.Second)) || !n.Dirty() {
					t.Fatalf("promise not recorded: %+v", p)
				}
			case Decided:
				if out[0].Value != c.p.Decided {
					t.Fatalf("decided value %q", out[0].Value)
				}
			case Reject:
				if p.Promised != c.p.Promised || p.LeaseHolder != c.p.LeaseHolder {
					t.Fatalf("reject changed the promise: %+v", p)
				}
			}
		})
	}
}

func TestPromiseReportsAcceptedValue(t *testing.T) {
	n := New("b", 3, Persistent{Promised: Ballot{2, "c"}, AcceptedBallot: Ballot{2, "c"}, AcceptedValue: "c"}, Config{})
	out := n.Handle(t0, Msg{Kind: Prepare, From: "a", Ballot: Ballot{3, "a"}}, view("a", "b"))
	if len(out) != 1 || out[0].Kind != Promise || out[0].Value != "c" || out[0].AcceptedBallot != (Ballot{2, "c"}) {
		t.Fatalf("got %+v", out)
	}
}

func TestAcceptorAccept(t *testing.T) {
	cases := []struct {
		name string
		p    Persistent
		m    Msg
		want Kind
	}{
		{"accepts promised ballot", Persistent{Promised: Ballot{3, "a"}}, Msg{Kind: Accept, From: "a", Ballot: Ballot{3, "a"}, Value: "a"}, Accepted},
		{"accepts higher ballot", Persistent{Promised: Ballot{3, "a"}}, Msg{Kind: Accept, From: "c", Ballot: Ballot{4, "c"}, Value: "c"}, Accepted},
		{"refuses lower ballot", Persistent{Promised: Ballot{3, "c"}}, Msg{Kind: Accept, From: "a", Ballot: Ballot{3, "a"}, Value: "a"}, Reject},
		{"decided answers", Persistent{Decided: "a"}, Msg{Kind: Accept, From: "c", Ballot: Ballot{9, "c"}, Value: "c"}, Decided},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := New("b", 3, c.p, Config{})
			out := n.Handle(t0, c.m, view("a", "b", "c"))
			if len(out) != 1 || out[0].Kind != c.want {
				t.Fatalf("got %+v, want %v", out, c.want)
			}
			p := n.Persistent()
			if c.want == Accepted && (p.AcceptedValue != c.m.Value || p.AcceptedBallot != c.m.Ballot || p.Promised != c.m.Ballot) {
				t.Fatalf("accept not recorded: %+v", p)
			}
			if c.want == Reject && p.AcceptedValue != "" {
				t.Fatalf("rejected accept recorded: %+v", p)
			}
		})
	}
}

func TestProposerAdoptsHighestAcceptedValue(t *testing.T) {
	n := New("a", 5, Persistent{}, Config{})
	prep := n.Tick(t0, view("a", "b", "c", "d", "e"))
	b := prep[0].Ballot
	rq := prep[0].ReqID
	if out := n.Handle(t0, Msg{Kind: Promise, From: "a", ReqID: rq, Ballot: b}, View{}); out != nil {
		t.Fatalf("accept before majority: %+v", out)
	}
	n.Handle(t0, Msg{Kind: Promise, From: "b", ReqID: rq, Ballot: b, Value: "d", AcceptedBallot: Ballot{0, "d"}}, View{})
	out := n.Handle(t0, Msg{Kind: Promise, From: "c", ReqID: rq, Ballot: b, Value: "e", AcceptedBallot: Ballot{0, "e"}}, View{})
	if len(out) != 3 {
		t.Fatalf("want accepts to the 3 promisers, got %+v", out)
	}
	for _, m := range out {
		if m.Kind != Accept || m.Value != "e" {
			t.Fatalf("want accept of e (highest accepted ballot), got %+v", m)
		}
	}
	// Stale reply of another round is ignored.
	if out := n.Handle(t0, Msg{Kind: Accepted, From: "b", ReqID: rq + 7, Ballot: b}, View{}); out != nil {
		t.Fatalf("stale reply acted on: %+v", out)
	}
	n.Handle(t0, Msg{Kind: Accepted, From: "a", ReqID: rq, Ballot: b}, View{})
	n.Handle(t0, Msg{Kind: Accepted, From: "b", ReqID: rq, Ballot: b}, View{})
	out = n.Handle(t0, Msg{Kind: Accepted, From: "c", ReqID: rq, Ballot: b}, view("a", "b", "c", "d", "e"))
	if n.Decided() != "e" || len(out) != 5 || out[0].Kind != Decided {
		t.Fatalf("decided %q, out %+v", n.Decided(), out)
	}
}

func TestRoundTimeoutAndBackoff(t *testing.T) {
	n := New("a", 3, Persistent{}, Config{RoundTimeout: 3 * time.Second, Backoff: time.Second})
	v := view("a", "b", "c")
	if len(n.Tick(t0, v)) == 0 {
		t.Fatal("no round")
	}
	if out := n.Tick(t0.Add(time.Second), v); out != nil {
		t.Fatalf("second round while first runs: %+v", out)
	}
	if out := n.Tick(t0.Add(3*time.Second), v); out != nil {
		t.Fatalf("retried without backoff: %+v", out)
	}
	out := n.Tick(t0.Add(4*time.Second), v)
	if len(out) == 0 || out[0].Ballot.Round != 2 {
		t.Fatalf("want round 2 after backoff, got %+v", out)
	}
}

func TestRejectWithHigherBallotEndsRound(t *testing.T) {
	n := New("a", 3, Persistent{}, Config{})
	prep := n.Tick(t0, view("a", "b", "c"))
	n.Handle(t0, Msg{Kind: Reject, From: "b", ReqID: prep[0].ReqID, Ballot: prep[0].Ballot, Promised: Ballot{1, "a"}}, View{})
	if !n.Proposing() {
		t.Fatal("a reject without a higher ballot ended the round")
	}
	n.Handle(t0, Msg{Kind: Reject, From: "c", ReqID: prep[0].ReqID, Ballot: prep[0].Ballot, Promised: Ballot{7, "c"}}, View{})
	if n.Proposing() || n.Persistent().MaxRound != 7 {
		t.Fatalf("proposing=%v maxRound=%d", n.Proposing(), n.Persistent().MaxRound)
	}
}

func TestLearnIsFinal(t *testing.T) {
	n := New("a", 3, Persistent{}, Config{})
	if err := n.Learn("b"); err != nil || n.Decided() != "b" {
		t.Fatal(err)
	}
	if err := n.Learn("c"); err == nil || n.Decided() != "b" {
		t.Fatalf("conflicting decision accepted: %v %q", err, n.Decided())
	}
}

// sim is an in-process cluster: nodes, a network that loses, reorders, duplicates and partitions, crashes
// that keep only what was persisted, divergent membership views, and clocks that jump.
type sim struct {
	t       *testing.T
	rng     *rand.Rand
	ids     []string
	nodes   map[string]*Node
	disk    map[string]Persistent
	down    map[string]bool
	side    map[string]int // partition side; messages cross sides only when equal
	net     []Msg
	now     time.Time
	decided map[string]string // every value any node ever decided, by node
	cfg     Config
	// accepted records, for every ballot, which acceptors ever accepted it and with what value: a value
	// accepted by a majority under one ballot is chosen, whether or not anyone learned it yet.
	accepted map[Ballot]map[string]string
	chosen   string
	stats    struct{ proposers map[string]bool }
	// learner marks the nodes with /var in RAM: Config.Learner, left out of every view's Alive (as the agent
	// does), and a restart forgets everything they ever persisted.
	learner map[string]bool
}

func newSim(t *testing.T, seed uint64, n int, unaided bool) *sim {
	return newSimLearners(t, seed, n, 0, unaided)
}

// newSimLearners is newSim with the last learners nodes (by index; ids are shuffled) learners.
func newSimLearners(t *testing.T, seed uint64, n, learners int, unaided bool) *sim {
	s := &sim{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), nodes: map[string]*Node{},
		disk: map[string]Persistent{}, down: map[string]bool{}, side: map[string]int{}, now: t0, decided: map[string]string{},
		accepted: map[Ballot]map[string]string{}, learner: map[string]bool{},
		cfg: Config{LeaseTTL: 10 * time.Second, RoundTimeout: 3 * time.Second, Backoff: time.Second, MaxBackoff: 5 * time.Second, unaided: unaided}}
	// Ids in random order relative to the node index, so "lowest" is not always node 0.
	for k, i := range s.rng.Perm(n) {
		id := fmt.Sprintf("n%02d", i)
		s.ids = append(s.ids, id)
		s.learner[id] = k >= n-learners
	}
	for _, id := range s.ids {
		s.start(id)
	}
	return s
}

// start (re)starts node id from what survives a reboot: its persisted state, nothing for a learner.
func (s *sim) start(id string) {
	cfg, p := s.cfg, s.disk[id]
	if s.learner[id] {
		cfg.Learner, p = true, Persistent{}
	}
	s.nodes[id] = New(id, len(s.ids), p, cfg)
}

// viewOf is a node's membership view: a random subset of the nodes it can reach, itself always included.
// Views deliberately disagree (A sees {A,B}, C sees {B,C}) — the case where "lowest id I see" alone would
// give two initialisers.
func (s *sim) viewOf(id string, stable bool) View {
	var v View
	if !s.learner[id] {
		v.Alive = []string{id}
	}
	for _, o := range s.ids {
		if o == id || s.down[o] || s.learner[o] {
			continue
		}
		if stable || (s.side[o] == s.side[id] && s.rng.IntN(4) != 0) || s.rng.IntN(8) == 0 {
			v.Alive = append(v.Alive, o)
		}
	}
	slices.Sort(v.Alive)
	// Metadata gossip: a decided value of a node in view may reach us.
	for _, o := range v.Alive {
		if d := s.nodes[o].Decided(); d != "" && (stable || s.rng.IntN(3) == 0) {
			v.Learned = d
		}
	}
	return v
}

func (s *sim) after(id string, out []Msg) {
	n := s.nodes[id]
	if n.Dirty() {
		p := n.Persistent()
		s.disk[id] = p // persisted before anything is sent
		if !p.AcceptedBallot.IsZero() {
			if s.accepted[p.AcceptedBallot] == nil {
				s.accepted[p.AcceptedBallot] = map[string]string{}
			}
			s.accepted[p.AcceptedBallot][id] = p.AcceptedValue
			if acc := s.accepted[p.AcceptedBallot]; len(acc) >= Majority(len(s.ids)) {
				if s.chosen != "" && s.chosen != p.AcceptedValue {
					s.t.Fatalf("two values chosen: %s, then %s under %+v", s.chosen, p.AcceptedValue, p.AcceptedBallot)
				}
				s.chosen = p.AcceptedValue
			}
		}
	}
	for _, m := range out {
		if m.Kind == Accept {
			if s.stats.proposers == nil {
				s.stats.proposers = map[string]bool{}
			}
			s.stats.proposers[m.From] = true
		}
	}
	if d := n.Decided(); d != "" {
		s.decided[id] = d
		for other, v := range s.decided {
			if v != d {
				s.t.Fatalf("two initialisers: %s decided %s, %s decided %s", id, d, other, v)
			}
		}
	}
	s.net = append(s.net, out...)
}

func (s *sim) tick(id string, stable bool) {
	if s.down[id] {
		return
	}
	s.after(id, s.nodes[id].Tick(s.now, s.viewOf(id, stable)))
}

func (s *sim) deliver(i int, keep, stable bool) {
	m := s.net[i]
	if !keep {
		s.net = slices.Delete(s.net, i, i+1)
	}
	if s.down[m.To] || (!stable && s.side[m.From] != s.side[m.To]) {
		return
	}
	s.after(m.To, s.nodes[m.To].Handle(s.now, m, s.viewOf(m.To, stable)))
}

func (s *sim) chaosStep() {
	switch r := s.rng.IntN(100); {
	case r < 40 && len(s.net) > 0:
		s.deliver(s.rng.IntN(len(s.net)), s.rng.IntN(10) == 0, false)
	case r < 50 && len(s.net) > 0:
		i := s.rng.IntN(len(s.net))
		s.net = slices.Delete(s.net, i, i+1) // lose a message
	case r < 75:
		s.tick(s.ids[s.rng.IntN(len(s.ids))], false)
	case r < 88:
		s.now = s.now.Add(time.Duration(s.rng.IntN(4000)) * time.Millisecond)
	case r < 93:
		id := s.ids[s.rng.IntN(len(s.ids))]
		s.down[id] = !s.down[id]
		if !s.down[id] { // restart: volatile state lost, persisted state kept
			s.start(id)
		}
	default:
		for _, id := range s.ids {
			s.side[id] = s.rng.IntN(2)
		}
	}
}

// heal ends all faults and runs the cluster until every node has decided, proving the chaos left it live.
func (s *sim) heal() {
	for _, id := range s.ids {
		if s.down[id] {
			s.down[id] = false
			s.start(id)
		}
	}
	for step := 0; step < 5000; step++ {
		all := true
		for _, id := range s.ids {
			all = all && s.nodes[id].Decided() != ""
		}
		if all {
			return
		}
		s.now = s.now.Add(500 * time.Millisecond)
		for _, id := range s.ids {
			s.tick(id, true)
		}
		for len(s.net) > 0 {
			s.deliver(0, false, true)
		}
	}
	s.t.Fatalf("no decision after healing: %+v", s.disk)
}

func TestSimulationAtMostOneInitialiser(t *testing.T) {
	t.Run("aided", func(t *testing.T) { simulate(t, false) })
	// Without the liveness aids every node with a majority in view proposes: far more contention, and the
	// proof that safety rests on the quorums alone.
	t.Run("plain paxos", func(t *testing.T) { simulate(t, true) })
}

func simulate(t *testing.T, unaided bool) {
	seeds := 400
	if testing.Short() {
		seeds = 50
	}
	contested := 0
	for seed := range seeds {
		n := 1 + seed%5
		s := newSim(t, uint64(seed), n, unaided)
		for range 3000 {
			s.chaosStep()
		}
		if len(s.stats.proposers) > 1 {
			contested++
		}
		s.heal()
		d := s.nodes[s.ids[0]].Decided()
		if !slices.Contains(s.ids, d) {
			t.Fatalf("seed %d: decided %q is not a node", seed, d)
		}
	}
	// The test only proves something if the chaos really made several nodes reach the accept phase.
	t.Logf("%d of %d runs had competing proposers in the accept phase", contested, seeds)
	if contested < seeds/10 {
		t.Fatalf("only %d of %d runs were contested: the simulation is too gentle", contested, seeds)
	}
}

// TestSimulationLearnersForget: nodes with /var in RAM forget everything at every restart. As learners (no
// vote, left out of the views) they cannot break safety, and the voters, a majority of the expected size,
// still decide; every learner learns the decision. Without Config.Learner (forgetful voters) this simulation
// finds two chosen values.
func TestSimulationLearnersForget(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 40
	}
	for seed := range seeds {
		n := 3 + seed%3 // 3, 4, 5 nodes with 1, 1, 2 learners: as many as leave a majority of voters
		learners := n - Majority(n)
		s := newSimLearners(t, uint64(seed), n, learners, seed%2 == 1)
		for range 3000 {
			s.chaosStep()
		}
		s.heal()
		d := s.nodes[s.ids[0]].Decided()
		if !slices.Contains(s.ids, d) || s.learner[d] {
			t.Fatalf("seed %d: decided %q, want a voter", seed, d)
		}
	}
}

func TestLearnerNeverVotes(t *testing.T) {
	n := New("a", 3, Persistent{}, Config{Learner: true})
	if out := n.Tick(t0, view("a", "b", "c")); len(out) != 0 {
		t.Fatalf("a learner proposed: %+v", out)
	}
	for _, m := range []Msg{{Kind: Prepare, From: "b", Ballot: Ballot{1, "b"}}, {Kind: Accept, From: "b", Ballot: Ballot{1, "b"}, Value: "b"}} {
		out := n.Handle(t0, m, view("b", "c"))
		if len(out) != 1 || out[0].Kind != Reject || out[0].Reason != "a learner: keeps no state across reboots, so it does not vote" {
			t.Fatalf("%v: got %+v, want a reject", m.Kind, out)
		}
	}
	if p := n.Persistent(); !p.Promised.IsZero() || p.AcceptedValue != "" {
		t.Fatalf("a learner promised or accepted: %+v", p)
	}
	n.Handle(t0, Msg{Kind: Decided, From: "b", Value: "b"}, view("b", "c"))
	if n.Decided() != "b" {
		t.Fatalf("decision not learned: %q", n.Decided())
	}
}

// TestSimulationSimultaneousBoot: everyone boots at the same instant with a full view; exactly one round wins.
func TestSimulationSimultaneousBoot(t *testing.T) {
	for seed := range 100 {
		s := newSim(t, uint64(seed), 3+seed%3, false)
		for _, id := range s.ids {
			s.tick(id, true)
		}
		for len(s.net) > 0 {
			s.deliver(s.rng.IntN(len(s.net)), false, true)
		}
		want := slices.Min(s.ids)
		for _, id := range s.ids {
			if got := s.nodes[id].Decided(); got != want {
				t.Fatalf("seed %d: %s decided %q, want the lowest id %s", seed, id, got, want)
			}
		}
	}
}
