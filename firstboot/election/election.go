// Package election decides, once per cluster lifetime, which node initialises the cluster.
//
// It is single-decree Paxos over the value "id of the initialiser", with two liveness aids on top:
// only the lowest id a node sees (with a majority of the expected size in view) proposes, and an acceptor
// that promised a proposer holds that promise as a lease (TTL) against other proposers. The aids only ever
// make nodes refuse, and refusing is always safe in Paxos, so safety rests on the quorum intersection alone:
// no timing assumption, no clock agreement, any message loss, reordering, duplication or partition.
//
// The package is a pure state machine: the caller feeds it time, its membership view and inbound messages,
// persists Persistent() whenever Dirty() reports a change (before sending what the step returned), and
// delivers the returned messages (including those addressed to itself).
package election

import (
	"fmt"
	"slices"
	"time"
)

// Kind says what a message is.
type Kind uint8

const (
	KindUnknown Kind = iota
	// Prepare asks acceptors to promise a ballot (phase 1a); the "grant request".
	Prepare
	// Promise grants a ballot and reports what the acceptor accepted before (phase 1b).
	Promise
	// Accept asks acceptors to accept a value under a promised ballot (phase 2a).
	Accept
	// Accepted confirms an Accept (phase 2b).
	Accepted
	// Reject refuses a Prepare or Accept; Promised carries the acceptor's promise so the proposer can outbid it.
	Reject
	// Decided tells the value that a majority accepted; learners adopt it forever.
	Decided
)

func (k Kind) String() string {
	switch k {
	case Prepare:
		return "prepare"
	case Promise:
		return "promise"
	case Accept:
		return "accept"
	case Accepted:
		return "accepted"
	case Reject:
		return "reject"
	case Decided:
		return "decided"
	default:
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
}

// Ballot orders proposals: by Round, then by proposer ID. Every proposer owns its ballots, so no two
// proposers ever use the same one.
type Ballot struct {
	Round uint64 `json:"round"`
	ID    string `json:"id"`
}

// Less reports whether b orders before o.
func (b Ballot) Less(o Ballot) bool {
	if b.Round != o.Round {
		return b.Round < o.Round
	}
	return b.ID < o.ID
}

// IsZero reports whether b is the zero ballot (nothing promised or accepted).
func (b Ballot) IsZero() bool { return b.Round == 0 && b.ID == "" }

// Msg is one election message. ReqID ties replies to the proposer's round so stale replies are dropped.
type Msg struct {
	Kind  Kind   `json:"kind"`
	ReqID uint64 `json:"req"`
	From  string `json:"from"`
	To    string `json:"to"`
	// Ballot is the ballot asked for (Prepare, Accept) or answered (Promise, Accepted, Reject).
	Ballot Ballot `json:"ballot"`
	// Promised is the acceptor's current promise (Reject only).
	Promised Ballot `json:"promised"`
	// Value is the proposed value (Accept), the previously accepted value (Promise) or the decided one (Decided).
	Value string `json:"value,omitempty"`
	// AcceptedBallot is the ballot under which Value was accepted (Promise only).
	AcceptedBallot Ballot `json:"acceptedBallot"`
	// Reason explains a Reject, for logs.
	Reason string `json:"reason,omitempty"`
}

// Persistent is what an acceptor must keep across restarts; losing it could let a restarted node promise
// or accept twice. The caller writes it to disk before sending the messages of the step that changed it.
type Persistent struct {
	// Promised is the highest ballot promised; LeaseHolder/LeaseUntil the proposer it is held for and until when.
	Promised    Ballot    `json:"promised"`
	LeaseHolder string    `json:"leaseHolder,omitempty"`
	LeaseUntil  time.Time `json:"leaseUntil"`
	// AcceptedBallot and AcceptedValue are the last value this acceptor accepted.
	AcceptedBallot Ballot `json:"acceptedBallot"`
	AcceptedValue  string `json:"acceptedValue,omitempty"`
	// MaxRound is the highest round this node has seen or used, so its next ballot outbids it.
	MaxRound uint64 `json:"maxRound"`
	// Decided is the initialiser id once known; it never changes again.
	Decided string `json:"decided,omitempty"`
}

// View is what the caller's membership layer sees right now.
type View struct {
	// Alive lists the ids failure detection sees alive, this node included.
	Alive []string
	// Formed reports that a formation is already announced (a node with a formation record never elects).
	Formed bool
	// Learned is a decided initialiser announced by some member (gossiped metadata), "" if none. Decisions
	// spread this way too, so a node that missed the Decided message, or restarted, still learns it.
	Learned string
}

// Config holds the timings. Zero values take the defaults.
type Config struct {
	// LeaseTTL is how long an acceptor refuses other proposers after promising one. Long enough to cover a
	// round trip plus the proposer's accept phase on a LAN (ms), short enough that a proposer that died is
	// replaced quickly. Default 10 s.
	LeaseTTL time.Duration
	// RoundTimeout is how long a proposer waits for a majority before giving up on a round. Default 3 s.
	RoundTimeout time.Duration
	// Backoff is the base pause before a proposer retries after a failed round; it grows linearly with
	// consecutive failures up to MaxBackoff. Defaults 1 s and 10 s.
	Backoff, MaxBackoff time.Duration

	// Learner makes this node a learner only: it never proposes, refuses every Prepare and Accept, and adopts
	// the decision it hears of. For a node that keeps nothing across a reboot (/var in RAM): Paxos' safety
	// rests on acceptors remembering what they promised and accepted, and one that forgets after a reboot
	// could join a second majority for another value. The caller leaves learners out of View.Alive, so
	// nobody waits for their votes.
	Learner bool

	// unaided turns off the liveness aids (lowest-id proposer, lease, lowest-id grant) so tests can show that
	// safety holds on plain Paxos alone, under heavy contention the aids would otherwise prevent.
	unaided bool
}

func (c Config) withDefaults() Config {
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.RoundTimeout == 0 {
		c.RoundTimeout = 3 * time.Second
	}
	if c.Backoff == 0 {
		c.Backoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 10 * time.Second
	}
	return c
}

// Majority is the quorum for an expected cluster size: more than half, so any two quorums share a node.
func Majority(expected int) int { return expected/2 + 1 }

// Node is one participant: proposer, acceptor and learner at once.
type Node struct {
	id       string
	expected int
	cfg      Config
	p        Persistent
	dirty    bool

	// round is the proposer's current attempt; zero when idle. Volatile: a restart simply starts a new round.
	round      Ballot
	reqID      uint64
	phase      Kind // Prepare or Accept while a round runs
	roundStart time.Time
	promises   map[string]Msg
	accepts    map[string]bool
	value      string
	failures   int
	nextTry    time.Time
}

// New returns a node with id in a cluster of expected members, resuming from p (zero for a fresh node).
func New(id string, expected int, p Persistent, cfg Config) *Node {
	return &Node{id: id, expected: expected, cfg: cfg.withDefaults(), p: p}
}

// Persistent returns the state to persist.
func (n *Node) Persistent() Persistent { return n.p }

// Dirty reports whether Persistent changed since the last call, and clears the flag.
func (n *Node) Dirty() bool {
	d := n.dirty
	n.dirty = false
	return d
}

// Decided returns the initialiser id once decided, else "".
func (n *Node) Decided() string { return n.p.Decided }

// Proposing reports whether this node runs a round now (for status: "electing").
func (n *Node) Proposing() bool { return !n.round.IsZero() }

// Learn adopts a decided value heard elsewhere (a Decided message, a peer's metadata, a formation record).
// A decision is final: a different value than the one already decided is refused with an error, which
// means a broken invariant (or a peer with the key lying) and must be surfaced, not absorbed.
func (n *Node) Learn(v string) error {
	if v == "" || v == n.p.Decided {
		return nil
	}
	if n.p.Decided != "" {
		return fmt.Errorf("election: learned initialiser %s but %s was decided", v, n.p.Decided)
	}
	n.p.Decided = v
	n.dirty = true
	n.round = Ballot{}
	return nil
}

// Tick advances time: it starts a round when this node should propose, and abandons a round that timed out.
func (n *Node) Tick(now time.Time, v View) []Msg {
	_ = n.Learn(v.Learned) // a conflicting value is surfaced by the caller comparing Decided() with it
	if n.p.Decided != "" || v.Formed {
		n.round = Ballot{}
		return nil
	}
	if !n.round.IsZero() {
		if now.Sub(n.roundStart) < n.cfg.RoundTimeout {
			return nil
		}
		n.fail(now)
	}
	if !n.eligible(v) || now.Before(n.nextTry) {
		return nil
	}
	n.p.MaxRound++
	n.dirty = true
	n.reqID++
	n.round = Ballot{Round: n.p.MaxRound, ID: n.id}
	n.phase = Prepare
	n.roundStart = now
	n.promises = map[string]Msg{}
	n.accepts = map[string]bool{}
	n.value = ""
	return n.broadcast(v.Alive, Msg{Kind: Prepare, Ballot: n.round})
}

// eligible reports whether this node should propose: it sees a majority of the expected size, itself
// included, and has the lowest id among them. Views can differ, so two nodes may both be eligible; that
// costs a round, never safety.
func (n *Node) eligible(v View) bool {
	if n.cfg.Learner || !slices.Contains(v.Alive, n.id) || len(v.Alive) < Majority(n.expected) {
		return false
	}
	return n.cfg.unaided || lowest(v.Alive) == n.id
}

func (n *Node) fail(now time.Time) {
	n.round = Ballot{}
	n.failures++
	d := time.Duration(n.failures) * n.cfg.Backoff
	if d > n.cfg.MaxBackoff {
		d = n.cfg.MaxBackoff
	}
	n.nextTry = now.Add(d)
}

// Handle processes one inbound message and returns the replies.
func (n *Node) Handle(now time.Time, m Msg, v View) []Msg {
	switch m.Kind {
	case Prepare:
		return n.onPrepare(now, m, v)
	case Accept:
		return n.onAccept(m)
	case Promise:
		return n.onPromise(m, v)
	case Accepted:
		return n.onAccepted(m, v)
	case Reject:
		n.onReject(now, m)
		return nil
	case Decided:
		_ = n.Learn(m.Value) // a conflicting decision is surfaced by the caller comparing Decided() with m.Value
		return nil
	default:
		return nil
	}
}

func (n *Node) reply(m Msg, kind Kind) Msg {
	return Msg{Kind: kind, ReqID: m.ReqID, From: n.id, To: m.From, Ballot: m.Ballot}
}

func (n *Node) onPrepare(now time.Time, m Msg, v View) []Msg {
	if n.p.Decided != "" {
		r := n.reply(m, Decided)
		r.Value = n.p.Decided
		return []Msg{r}
	}
	if m.Ballot.Round > n.p.MaxRound {
		n.p.MaxRound = m.Ballot.Round
		n.dirty = true
	}
	reject := func(reason string) []Msg {
		r := n.reply(m, Reject)
		r.Promised, r.Reason = n.p.Promised, reason
		return []Msg{r}
	}
	switch {
	case n.cfg.Learner:
		return reject("a learner: keeps no state across reboots, so it does not vote")
	case v.Formed:
		return reject("formation already announced")
	case m.Ballot.Less(n.p.Promised):
		return reject("promised a higher ballot")
	case n.cfg.unaided:
	case n.p.LeaseHolder != "" && n.p.LeaseHolder != m.From && now.Before(n.p.LeaseUntil):
		return reject("lease held by " + n.p.LeaseHolder)
	case lowest(v.Alive) != m.From:
		return reject("not the lowest id in view")
	}
	n.p.Promised = m.Ballot
	n.p.LeaseHolder = m.From
	n.p.LeaseUntil = now.Add(n.cfg.LeaseTTL)
	n.dirty = true
	r := n.reply(m, Promise)
	r.Value, r.AcceptedBallot = n.p.AcceptedValue, n.p.AcceptedBallot
	return []Msg{r}
}

func (n *Node) onAccept(m Msg) []Msg {
	if n.p.Decided != "" {
		r := n.reply(m, Decided)
		r.Value = n.p.Decided
		return []Msg{r}
	}
	// Paxos phase 2: accept unless a higher ballot was promised. No lease or view check here: a proposer that
	// got this far holds a majority of promises, and refusing now would only waste its round.
	if n.cfg.Learner {
		r := n.reply(m, Reject)
		r.Promised, r.Reason = n.p.Promised, "a learner: keeps no state across reboots, so it does not vote"
		return []Msg{r}
	}
	if m.Ballot.Less(n.p.Promised) {
		r := n.reply(m, Reject)
		r.Promised, r.Reason = n.p.Promised, "promised a higher ballot"
		return []Msg{r}
	}
	n.p.Promised = m.Ballot
	n.p.AcceptedBallot = m.Ballot
	n.p.AcceptedValue = m.Value
	n.dirty = true
	return []Msg{n.reply(m, Accepted)}
}

func (n *Node) current(m Msg) bool {
	return !n.round.IsZero() && m.ReqID == n.reqID && m.Ballot == n.round
}

func (n *Node) onPromise(m Msg, v View) []Msg {
	if !n.current(m) || n.phase != Prepare {
		return nil
	}
	n.promises[m.From] = m
	if len(n.promises) < Majority(n.expected) {
		return nil
	}
	// Paxos: adopt the value accepted under the highest ballot among the promises; only if none was, propose
	// ourselves. This is what makes a value accepted by a majority (possibly unknown to us) stick.
	var best Ballot
	n.value = n.id
	for _, p := range n.promises {
		if p.Value != "" && best.Less(p.AcceptedBallot) {
			best, n.value = p.AcceptedBallot, p.Value
		}
	}
	n.phase = Accept
	to := make([]string, 0, len(n.promises))
	for id := range n.promises {
		to = append(to, id)
	}
	slices.Sort(to)
	return n.broadcast(to, Msg{Kind: Accept, Ballot: n.round, Value: n.value})
}

func (n *Node) onAccepted(m Msg, v View) []Msg {
	if !n.current(m) || n.phase != Accept {
		return nil
	}
	n.accepts[m.From] = true
	if len(n.accepts) < Majority(n.expected) {
		return nil
	}
	value := n.value
	n.round = Ballot{}
	n.failures = 0
	if err := n.Learn(value); err != nil {
		return nil // unreachable while the quorum invariant holds; Decided() keeps the first value
	}
	to := v.Alive
	if !slices.Contains(to, n.id) {
		to = append(slices.Clone(to), n.id)
	}
	return n.broadcast(to, Msg{Kind: Decided, Value: value})
}

func (n *Node) onReject(now time.Time, m Msg) {
	if m.Promised.Round > n.p.MaxRound {
		n.p.MaxRound = m.Promised.Round
		n.dirty = true
	}
	if !n.current(m) {
		return
	}
	// One refusal doesn't end the round (a majority may still answer), but a higher ballot out there means
	// our accept phase cannot succeed: give up now and retry with a higher round after the backoff.
	if n.round.Less(m.Promised) {
		n.fail(now)
	}
}

func (n *Node) broadcast(to []string, tmpl Msg) []Msg {
	out := make([]Msg, 0, len(to))
	for _, id := range to {
		m := tmpl
		m.From, m.To, m.ReqID = n.id, id, n.reqID
		out = append(out, m)
	}
	return out
}

func lowest(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return slices.Min(ids)
}
