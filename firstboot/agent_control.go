package firstboot

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"time"

	"github.com/kiln-project/kiln/firstboot/discovery"
	"github.com/kiln-project/kiln/firstboot/election"
	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/firstboot/status"
)

// Message kinds on the reliable, encrypted membership channel: the first byte of a message body.
const (
	msgElection      = 'e' // election.Msg (JSON)
	msgFormation     = 'f' // record (JSON): the formation, join tokens included
	msgFormationWant = 'q' // "send me your formation record" (empty)
)

// controlTick is how often the control goroutine advances the election: fine-grained against the
// election's second-scale round timeout and backoff.
const controlTick = 250 * time.Millisecond

// control runs beside the reconcile loop so the election keeps answering while a reconciler waits on a
// slow swarm join: a voter that stops answering for 90 s would stall everyone's formation.
func (a *agent) control(ctx context.Context) {
	tick := time.NewTicker(controlTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-a.disc.Messages():
			a.onMessage(m)
		case <-a.disc.Events():
			a.step()
			a.wake()
		case <-tick.C:
			a.step()
		}
	}
}

// watchdog feeds systemd's watchdog every Watchdog/3 while the agent makes progress (setup retries and
// reconcile passes both count).
func (a *agent) watchdog(ctx context.Context) {
	t := time.NewTicker(a.opts.Watchdog / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if !a.stalled(now) {
				a.opts.Notify("WATCHDOG=1")
			} else {
				a.log.Error("reconcile loop stalled; no longer feeding the watchdog", "since", time.Unix(0, a.beat.Load()))
			}
		}
	}
}

// stalled reports whether the reconcile loop has made no progress for longer than a reconciler may take:
// then the watchdog stops being fed and systemd restarts the agent.
func (a *agent) stalled(now time.Time) bool {
	return now.Sub(time.Unix(0, a.beat.Load())) > a.opts.ReconcileTimeout+time.Minute
}

// view is the election's input from the membership: who is alive and votes (members with /var in RAM are
// learners: election.Config.Learner), whether any member announces a formed swarm, and any initialiser a
// member announces as decided.
func (a *agent) view() (election.View, string) {
	var v election.View
	var announcer string
	for _, p := range a.disc.Peers() {
		if !p.Alive {
			continue
		}
		if !p.StateInRAM {
			v.Alive = append(v.Alive, p.ID)
		}
		if p.Meta.Initialiser != "" && p.ID != a.id {
			v.Learned = p.Meta.Initialiser
		}
		if p.Meta.SwarmID != "" && p.ID != a.id {
			v.Formed, announcer = true, p.ID
		}
	}
	return v, announcer
}

// step advances the election and asks for a missing formation record.
func (a *agent) step() {
	v, announcer := a.view()
	a.mu.Lock()
	v.Formed = v.Formed || a.rec != nil
	before := a.el.Decided()
	out := a.el.Tick(time.Now(), v)
	if v.Learned != "" && a.el.Decided() != v.Learned {
		a.log.Error("a member announces another initialiser than the one decided here", "decided", a.el.Decided(), "announced", v.Learned)
	}
	ok := a.persistElection()
	want := a.rec == nil && announcer != "" && time.Since(a.asked[announcer]) > 3*time.Second
	if want {
		a.asked[announcer] = time.Now()
	}
	decided := a.el.Decided()
	a.mu.Unlock()
	if ok {
		a.deliver(out)
	}
	if want {
		a.send(announcer, []byte{msgFormationWant})
	}
	if decided != before {
		a.onDecided(decided)
	}
}

func (a *agent) onDecided(d string) {
	a.log.Info("initialiser decided", "initialiser", d, "self", d == a.id)
	a.wake()
}

// persistElection writes the acceptor state if it changed. It reports false when that failed: then the
// step's messages must not be sent, since a promise that is not on disk could be forgotten by a restart
// and given twice. Called with a.mu held.
func (a *agent) persistElection() bool {
	if !a.el.Dirty() {
		return true
	}
	if err := writeJSON(filepath.Join(a.opts.StateDir, electionFile), a.el.Persistent()); err != nil {
		a.log.Error("persist election state; not answering", "err", err)
		return false
	}
	return true
}

// deliver sends election messages, handling those addressed to this node in place.
func (a *agent) deliver(out []election.Msg) {
	for len(out) > 0 {
		m := out[0]
		out = out[1:]
		if m.To != a.id {
			body, err := json.Marshal(m)
			if err != nil {
				continue
			}
			a.send(m.To, append([]byte{msgElection}, body...))
			continue
		}
		v, _ := a.view()
		a.mu.Lock()
		v.Formed = v.Formed || a.rec != nil
		before := a.el.Decided()
		more := a.el.Handle(time.Now(), m, v)
		ok := a.persistElection()
		after := a.el.Decided()
		a.mu.Unlock()
		if ok {
			out = append(out, more...)
		}
		if after != before {
			a.onDecided(after)
		}
	}
}

// send delivers body to a member in the background: a reliable send dials TCP and may wait for a dead
// node's timeout, which must not hold up the election. Every protocol on top retries on its own timer.
func (a *agent) send(to string, body []byte) {
	a.sends.Add(1)
	go func() {
		defer a.sends.Done()
		if err := a.disc.Send(to, body); err != nil {
			a.log.Debug("send", "to", to, "kind", string(body[0]), "err", err)
		}
	}()
}

func (a *agent) onMessage(m discovery.Message) {
	if len(m.Body) == 0 {
		return
	}
	body := m.Body[1:]
	switch m.Body[0] {
	case msgElection:
		var em election.Msg
		if err := json.Unmarshal(body, &em); err != nil || em.From != m.From || em.To != a.id {
			a.log.Warn("dropped malformed election message", "from", m.From, "err", err)
			return
		}
		a.deliver([]election.Msg{em})
	case msgFormation:
		var r record
		if err := json.Unmarshal(body, &r); err != nil {
			a.log.Warn("dropped malformed formation record", "from", m.From, "err", err)
			return
		}
		a.merge(r, m.From)
	case msgFormationWant:
		a.mu.Lock()
		r := a.rec
		a.mu.Unlock()
		if r != nil {
			a.send(m.From, r.message())
		}
	default:
		a.log.Warn("dropped message of unknown kind", "from", m.From, "kind", m.Body[0])
	}
}

// localState is this node's share of memberlist's encrypted push/pull: its formation record, so a node
// that joins (or missed the announcement) gets it on its first exchange.
func (a *agent) localState(join bool) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rec == nil {
		return nil
	}
	b, _ := json.Marshal(a.rec)
	return b
}

func (a *agent) mergeRemoteState(buf []byte, join bool) {
	var r record
	if err := json.Unmarshal(buf, &r); err != nil {
		a.log.Warn("ignored malformed formation record in push/pull", "err", err)
		return
	}
	a.merge(r, "push/pull")
}

// merge adopts a formation record heard from another node: the first one if this node has none, a newer
// version of the same swarm's record, and never a record of another swarm (that would mean two
// initialisers, which the election rules out; it is logged as the error it is).
func (a *agent) merge(r record, from string) {
	if err := r.valid(); err != nil {
		a.log.Warn("ignored invalid formation record", "from", from, "err", err)
		return
	}
	if err := r.checkOrigin(a.keyOf(r.Origin)); err != nil {
		a.log.Error("ignored formation record", "from", from, "err", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.rec == nil:
		if d := a.el.Decided(); d != "" && d != r.Initialiser {
			a.log.Error("formation record names another initialiser than the one decided here; adopting the record",
				"decided", d, "record", r.Initialiser)
		}
		_ = a.el.Learn(r.Initialiser)
		a.persistElection()
		a.adopt(&r, "formation adopted", from)
	case a.rec.SwarmID != r.SwarmID:
		if !a.conflicted[r.SwarmID] {
			a.conflicted[r.SwarmID] = true
			a.log.Error("ignored formation record of another swarm", "from", from, "ours", a.rec.SwarmID, "theirs", r.SwarmID, "theirs_initialiser", r.Initialiser)
		}
	case r.Epoch != a.rec.Epoch:
		// A forced recovery starts a new epoch: its records win whatever the clocks say, and records of an
		// older epoch (a node that was away during the recovery) never overwrite it.
		switch {
		case r.Epoch < a.rec.Epoch:
		case a.liveQuorum(time.Now(), r.Updated):
			alert := fmt.Sprintf("refused epoch %d from %s (origin %s, managers %v): this node's swarm has a leader "+
				"and %d reachable managers, so the recovery that made it ran on a node cut off from a live majority; "+
				"reset that node (reimage) rather than this cluster", r.Epoch, from, r.Origin, r.ManagerAddrs, a.quorumManagers)
			if a.refused != alert {
				a.log.Error("refused a newer epoch: this swarm holds a live raft quorum", "epoch", r.Epoch,
					"ours", a.rec.Epoch, "from", from, "origin", r.Origin, "managers", a.quorumManagers)
			}
			a.refused, a.refusedAt = alert, time.Now()
		default:
			a.adopt(&r, "formation record of a recovered cluster (new epoch)", from)
		}
	case !sameCA(a.rec.StorageCA, r.StorageCA):
		// Only the initialiser makes the CA, once; a refresh that brings another one (or drops it) is not the
		// cluster's record, whoever signed it.
		a.log.Error("ignored formation record that changes the storage CA", "from", from, "origin", r.Origin)
	case r.Updated.After(a.rec.Updated) && worthRefreshing(a.rec, &r):
		a.adopt(&r, "formation record refreshed", from)
	}
}

// keyOf is the node key discovery pinned for id, nil when there is none (or no discovery: tests).
func (a *agent) keyOf(id string) ed25519.PublicKey {
	if a.disc == nil {
		return nil
	}
	return a.disc.KeyOf(id)
}

// adopt stores r as the formation (persisted first) and starts a pass. Called with a.mu held.
func (a *agent) adopt(r *record, msg, from string) bool {
	if err := writeJSON(filepath.Join(a.opts.StateDir, formationFile), r); err != nil {
		a.log.Error("persist formation record", "err", err)
		return false
	}
	a.rec = r
	a.log.Info(msg, "from", from, "swarm", r.SwarmID, "initialiser", r.Initialiser, "managers", r.ManagerAddrs)
	a.wake()
	return true
}

// sawQuorum notes a pass that found this node a ready manager with managers reachable managers.
func (a *agent) sawQuorum(now time.Time, managers int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if managers < 2 {
		return // a swarm of one has a leader whatever happened to the others
	}
	if a.quorumSince.IsZero() || now.Sub(a.quorumAt) >= quorumFresh {
		a.quorumSince = now
	}
	a.quorumAt, a.quorumManagers = now, managers
}

// liveQuorum reports whether this node has been a ready manager of a swarm with at least two reachable
// managers (a raft leader answers there: the swarm holds quorum) since before made, without a gap of
// quorumFresh, the last pass included. A newer epoch is made by `recover --force-new-cluster` on a node
// that lost its quorum; if this node held one all along, the recovery ran on a node cut off from a live
// majority, and obeying it would throw that majority away. Nodes that come back after a recovery (the ones
// it declared lost) may form a quorum of the old swarm among themselves, but only after it: they adopt the
// epoch. Called with a.mu held.
func (a *agent) liveQuorum(now, made time.Time) bool {
	return !a.quorumSince.IsZero() && !a.quorumSince.After(made) && now.Sub(a.quorumAt) < quorumFresh
}

// quorumFresh is how long a pass's sight of a raft leader counts: a few passes, so a node whose swarm just
// lost its quorum (the others gone for good) adopts the recovered epoch soon after.
const quorumFresh = 2 * time.Minute

// worthRefreshing reports whether next carries news over cur. A manager list that only lacks addresses cur
// has is no news: members observe the managers at different moments (RemoteManagers lags a join), and
// adopting each node's smaller view in turn made records ping-pong between nodes, every adoption a disk
// write, a broadcast and a pass. Joining needs any reachable manager, so a list with a departed one is
// harmless until a list with a new address (a replacement) supersedes it.
func worthRefreshing(cur, next *record) bool {
	if sameRecord(cur, next) {
		return false
	}
	rest := *next
	rest.ManagerAddrs = cur.ManagerAddrs
	onlyAddrs := sameRecord(cur, &rest)
	return !onlyAddrs || !subset(next.ManagerAddrs, cur.ManagerAddrs)
}

func subset(xs, of []string) bool {
	for _, x := range xs {
		if !slices.Contains(of, x) {
			return false
		}
	}
	return true
}

func sameRecord(x, y *record) bool {
	return x.SwarmID == y.SwarmID && x.Initialiser == y.Initialiser && x.ManagerToken == y.ManagerToken &&
		x.WorkerToken == y.WorkerToken && slices.Equal(x.ManagerAddrs, y.ManagerAddrs) &&
		x.Managers == y.Managers && maps.Equal(x.GlusterPeers, y.GlusterPeers) && x.Epoch == y.Epoch &&
		sameCA(x.StorageCA, y.StorageCA)
}

func sameCA(x, y *glustertls.CA) bool {
	return x == nil && y == nil || x != nil && y != nil && *x == *y
}

// broadcastRecord sends the record to every live member (the fast path; push/pull is the safety net).
func (a *agent) broadcastRecord(r *record) {
	msg := r.message()
	for _, p := range a.disc.Peers() {
		if p.Alive && p.ID != a.id {
			a.send(p.ID, msg)
		}
	}
}

// message is r as the agent sends it (msgFormation).
func (r *record) message() []byte {
	b, _ := json.Marshal(r) // a record has no values JSON cannot encode
	return append([]byte{msgFormation}, b...)
}

// FormationMessage is a formation record's wire form, signed by key in the name of origin: what an agent sends
// when it announces or refreshes the record. Receivers accept it only when key is the node key they pinned for
// origin, so a holder of the cluster key cannot speak for another member; the security suite sends one forged
// this way to a formed lab and expects every node to ignore it.
func FormationMessage(f state.Formation, updated time.Time, origin string, key ed25519.PrivateKey) []byte {
	r := &record{Formation: f, Updated: updated}
	r.sign(origin, key)
	return r.message()
}

// republishMeta gossips the metadata again with what changed mid-pass (the swarm node, the record), keeping
// the phase and VIP flag of the last full publication.
func (a *agent) republishMeta() {
	a.mu.Lock()
	phase, holds := a.metaPhase, a.metaVIP
	a.mu.Unlock()
	if phase == "" {
		phase = status.PhaseForming
	}
	a.publishMeta(phase, holds)
}

// publishMeta gossips this node's phase, what it knows of the formation, and whether it holds the VIP.
func (a *agent) publishMeta(phase status.Phase, holdsVIP bool) {
	a.mu.Lock()
	a.metaPhase, a.metaVIP = phase, holdsVIP
	m := discovery.Meta{Phase: string(phase), Initialiser: a.el.Decided(), VIP: holdsVIP, SwarmNode: a.swarmNode,
		GlusterEpoch: a.glusterEpoch, StorageTLS: a.storageTLS}
	if a.rec != nil {
		m.SwarmID = a.rec.SwarmID
	}
	a.mu.Unlock()
	if err := a.disc.SetMeta(m); err != nil {
		a.log.Warn("publish metadata", "err", err)
	}
}
