package firstboot

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/kiln-project/kiln/firstboot/election"
	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/firstboot/statefs"
	"github.com/kiln-project/kiln/firstboot/status"
)

// PhaseElecting is reported while a majority is in view and the initialiser is being chosen (the status
// package's phases are open-ended; this one is the agent's).
const PhaseElecting status.Phase = "electing"

// closedBehindFirewall are the reconcilers that do not run in a pass whose firewall reconciler failed.
var closedBehindFirewall = map[string]bool{"swarm": true, "gluster-report": true, "gluster": true}

// result is what one reconciler did in one pass.
type result struct {
	name    string
	changed bool
	err     error
	took    time.Duration
}

func (a *agent) reconcileLoop(ctx context.Context) {
	for {
		wait := a.opts.PassInterval
		if a.pass(ctx) {
			wait = a.opts.SteadyInterval
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-a.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// pass builds the State, runs every reconciler in order, adopts what the swarm reconciler announces, and
// reports. A reconciler's error does not stop the ones after it: each one decides from State whether it
// can act (gluster waits for State.Swarm.Active), and the status shows every failure at once. It reports whether
// the node is settled: ready, and no reconciler changed anything or failed.
func (a *agent) pass(ctx context.Context) (settled bool) {
	a.beat.Store(time.Now().UnixNano())
	s := a.state()
	results := make([]result, 0, len(a.recs))
	var firewallErr error
	for _, r := range a.recs {
		if ctx.Err() != nil {
			return false
		}
		if firewallErr != nil && closedBehindFirewall[r.Name()] {
			// Fail closed: without this node's ruleset loaded, the boot ruleset (or an older one) decides who
			// reaches the cluster ports; swarm and storage do not open or use them until it is in place.
			s.Wait(r.Name(), "waiting for the firewall: "+firewallErr.Error())
			results = append(results, result{name: r.Name()})
			continue
		}
		// Membership is read before each reconciler, not once per pass: a reconciler can take minutes (gluster
		// commands on a loaded node), and right after a boot the pass starts seeing only this node. Rendering
		// the VRRP peers from that stale view made keepalived claim the VIP beside its holder after a power cut.
		a.refreshMembers(s)
		announced := s.Swarm.Announce != nil
		res := a.run(ctx, r, s)
		results = append(results, res)
		if res.name == "firewall" {
			firewallErr = res.err
		}
		if a.takeReports(s) {
			// What others decide on from this node's gossip goes out as soon as a reconciler observed it, not at
			// the end of the pass, so the reconcilers after that one (minutes of gluster commands on a loaded
			// node) do not delay it. The coordinator probes a member only once it has reported its glusterd's
			// epoch and TLS (gluster-report, gluster). The leader judges a not-Ready entry of this node's
			// hostname by the swarm node this node reports: still saying "no swarm node" a pass after its join
			// had completed, a loaded joiner had its fresh entry removed as a reimaged machine's leftover, and
			// then waited as a worker for a promotion that could not come.
			a.republishMeta()
		}
		a.beat.Store(time.Now().UnixNano())
		if !announced && s.Swarm.Announce != nil && s.Formation == nil && s.Initialiser {
			// The swarm was just initialised: publish the record now rather than at the end of the pass. The
			// joiners wait for its token, and the reconcilers after this one (gluster) pick their coordinator
			// from it; published at the end of the pass, it would reach them only after the rest of the pass
			// (tens of seconds on a loaded node), and gluster would spend that pass deferring to the wrong
			// coordinator. takeAnnounce at the end still sends refreshes.
			//
			// The gossip must carry this node's swarm node before anyone can join: a joiner that becomes leader
			// while the founder still advertises "no swarm node" would take the founder's entry for a reimaged
			// node's leftover and remove it. So the swarm node goes out first.
			// (takeReports above has sent it.)
			a.takeAnnounce(s.Swarm.Announce)
			s.Formation = a.formation()
		}
	}
	if ctx.Err() != nil {
		return false
	}
	if ann := s.Swarm.Announce; ann != nil {
		if s.Gluster.PoolUUIDs != nil {
			ann.GlusterPeers = s.Gluster.PoolUUIDs
		}
		a.sawQuorum(time.Now(), len(ann.ManagerAddrs))
		a.takeAnnounce(ann)
	}
	phase := a.phase(s, results)
	if phase == status.PhaseReady && s.Formation != nil && s.Formation.Epoch > a.epoch {
		// Everything converged in the new epoch: this node's state belongs to it now.
		if err := writeJSON(filepath.Join(a.opts.StateDir, epochFile), localEpoch{Epoch: s.Formation.Epoch}); err != nil {
			a.log.Warn("persist epoch", "err", err)
		} else {
			a.epoch = s.Formation.Epoch
		}
	}
	holds := false
	if vip := a.cfg.Cluster.VIP; vip.IsValid() {
		var err error
		if holds, err = a.opts.HoldsVIP(a.net.Interface, vip.Addr()); err != nil {
			a.log.Warn("observe VIP", "err", err)
		}
	}
	a.publishMeta(phase, holds)
	a.report(s, phase, results, holds)
	settled = phase == status.PhaseReady
	for _, r := range results {
		settled = settled && !r.changed && r.err == nil
	}
	return settled
}

// takeReports keeps what the reconcilers so far reported for gossip: this node's swarm node (the last one
// observed, when dockerd did not answer), its glusterd's epoch (likewise) and whether it speaks TLS (once on,
// on for the install). It reports whether any changed.
func (a *agent) takeReports(s *state.State) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := false
	if s.Swarm.Node != "" && s.Swarm.Node != a.swarmNode {
		a.swarmNode, changed = s.Swarm.Node, true
	}
	if s.Gluster.Epoch != "" && s.Gluster.Epoch != a.glusterEpoch {
		a.glusterEpoch, changed = s.Gluster.Epoch, true
	}
	if s.Gluster.TLS && !a.storageTLS {
		a.storageTLS, changed = true, true
	}
	return changed
}

// state snapshots config, decision and formation into a fresh State; pass adds the membership.
func (a *agent) state() *state.State {
	c := a.cfg.Cluster
	s := &state.State{Inputs: state.Inputs{Expected: c.Size, ClusterName: c.Name, VIP: c.VIP,
		Interface: a.net.Interface, Subnet: a.net.Subnet, ReplaceAfter: c.ReplaceAfter, LocalEpoch: a.epoch,
		Formation: a.formation()}}
	if a.ramReason != "" {
		s.NoBrick = statefs.NoBrickLine(a.ramReason)
	}
	a.mu.Lock()
	s.Initialiser = a.el.Decided() == a.id
	a.mu.Unlock()
	return s
}

// formation returns a copy of the adopted formation record (nil before there is one).
func (a *agent) formation() *state.Formation {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rec == nil {
		return nil
	}
	return a.rec.Formation.Clone()
}

// refreshMembers replaces the State's membership with discovery's current view; the rest of the State (what
// earlier reconcilers reported in this pass) stays.
func (a *agent) refreshMembers(s *state.State) {
	s.Members = s.Members[:0:0]
	now := time.Now()
	for _, p := range a.disc.Peers() {
		m := p.Member
		if m.ID == a.id {
			s.Self = m
		}
		m.Departed = !m.Alive && !m.DownSince.IsZero() && s.ReplaceAfter > 0 && now.Sub(m.DownSince) >= s.ReplaceAfter
		s.Members = append(s.Members, m) // Peers is sorted by ID
	}
}

// run calls one reconciler with a deadline, turning a panic into an error: one broken reconciler must not
// take the agent (and with it the membership and the VIP) down.
func (a *agent) run(ctx context.Context, r state.Reconciler, s *state.State) (res result) {
	res.name = r.Name()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, a.opts.ReconcileTimeout)
	defer cancel()
	defer func() {
		res.took = time.Since(start)
		if p := recover(); p != nil {
			res.err = fmt.Errorf("%s: panic: %v", res.name, p)
			a.log.Error("reconciler panicked", "reconciler", res.name, "panic", p, "stack", string(debug.Stack()))
		}
		switch {
		case res.err != nil:
			a.log.Warn("reconcile failed", "reconciler", res.name, "err", res.err, "took", res.took)
		case res.changed:
			a.log.Info("reconciled", "reconciler", res.name, "changed", true, "took", res.took)
		default:
			a.log.Debug("reconciled", "reconciler", res.name, "changed", false, "took", res.took)
		}
	}()
	res.changed, res.err = r.Reconcile(ctx, s)
	return res
}

// takeAnnounce turns the swarm reconciler's announced record into the formation record: the first one only
// on the decided initialiser, later ones only as refreshes of the same swarm.
func (a *agent) takeAnnounce(announced *state.Formation) {
	ann := *announced.Clone()
	a.mu.Lock()
	var out *record
	switch {
	case a.rec == nil && a.el.Decided() == a.id:
		ann.Initialiser = a.id
		ca, err := glustertls.NewCA(a.cfg.Cluster.Name)
		if err != nil {
			a.mu.Unlock()
			a.log.Error("not forming yet: make the storage CA", "err", err)
			return
		}
		ann.StorageCA = ca
		r := &record{Formation: ann, Updated: time.Now().UTC()}
		r.sign(a.id, a.nodeKey)
		if err := r.valid(); err != nil {
			a.log.Warn("swarm announce incomplete; not forming yet", "err", err)
		} else if a.adopt(r, "formation announced", a.id) {
			out = r
		}
	case a.rec == nil:
		// Only the decided initialiser may create the record; a swarm on any other node is not the cluster's.
		a.log.Warn("ignored swarm announce: this node is not the initialiser and has no formation", "swarm", ann.SwarmID)
	case a.rec.SwarmID != ann.SwarmID:
		a.log.Error("ignored swarm announce of another swarm", "ours", a.rec.SwarmID, "announced", ann.SwarmID)
	default:
		// The initialiser's CA stays the cluster's: announcers never carry it, and no refresh changes it.
		ann.Initialiser, ann.StorageCA = a.rec.Initialiser, a.rec.StorageCA
		r := &record{Formation: ann, Updated: time.Now().UTC()}
		r.sign(a.id, a.nodeKey)
		if worthRefreshing(a.rec, r) && r.valid() == nil && a.adopt(r, "formation record refreshed", a.id) {
			out = r
		}
	}
	a.mu.Unlock()
	if out != nil {
		a.broadcastRecord(out)
	}
}

func (a *agent) phase(s *state.State, results []result) status.Phase {
	alive := 0
	for _, m := range s.Members {
		if m.Alive {
			alive++
		}
	}
	// A reconciler that waits (state.Report.Pending) is not done: the node is not ready, but nothing failed either.
	failed := len(s.Pending) > 0
	for _, r := range results {
		failed = failed || r.err != nil
	}
	a.mu.Lock()
	decided, proposing := a.el.Decided(), a.el.Proposing()
	a.mu.Unlock()
	switch {
	case s.Formation == nil && decided == "" && alive < election.Majority(s.Expected) && !proposing:
		return status.PhaseDiscovering
	case s.Formation == nil && decided == "":
		return PhaseElecting
	case s.Formation == nil || (!a.everReady && (failed || alive < s.Expected)):
		return status.PhaseForming
	case failed || alive < s.Expected:
		return status.PhaseDegraded
	}
	a.everReady = true
	return status.PhaseReady
}

func (a *agent) report(s *state.State, phase status.Phase, results []result, holdsVIP bool) {
	st := &status.Status{Phase: phase, Members: s.Members, Reconcilers: map[string]string{}}
	maps.Copy(st.Reconcilers, s.Status)
	var errs []string
	for _, r := range results {
		switch {
		case r.err != nil:
			st.Reconcilers[r.name] = "error: " + r.err.Error()
			errs = append(errs, r.err.Error())
		case st.Reconcilers[r.name] == "" && r.changed:
			st.Reconcilers[r.name] = "changed"
		case st.Reconcilers[r.name] == "":
			st.Reconcilers[r.name] = "ok"
		}
	}
	st.Swarm = component(results, "swarm", s.Status["swarm"])
	if st.Swarm.State == "" {
		switch {
		case s.Swarm.Active:
			st.Swarm.State = "active"
		case s.Formation == nil:
			st.Swarm.State = "waiting"
		default:
			st.Swarm.State = "joining"
		}
	}
	st.Gluster = component(results, "gluster", s.Status["gluster"])
	if st.Gluster.State == "" {
		st.Gluster.State = "ok"
		if strings.HasPrefix(st.Gluster.Detail, "waiting") {
			st.Gluster.State = "waiting"
		}
	}
	st.VIPHolder = a.vipHolders(holdsVIP)
	if s.Formation == nil {
		a.mu.Lock()
		decided := a.el.Decided()
		a.mu.Unlock()
		if decided == "" {
			st.Election = electionLine(s.Members, s.Expected, a.ramReason != "")
		}
	}
	if len(errs) > 0 {
		a.lastErr, a.lastErrAt = strings.Join(errs, "; "), time.Now().UTC()
	}
	st.LastError, st.LastErrorAt = a.lastErr, a.lastErrAt
	a.mu.Lock()
	if time.Since(a.refusedAt) < alertFor {
		st.Alert = a.refused // records come again every push/pull while the recovered node is reachable
	}
	a.mu.Unlock()

	alive := 0
	for _, m := range s.Members {
		if m.Alive {
			alive++
		}
	}
	summary := fmt.Sprintf("%s: %d/%d members", phase, alive, s.Expected)
	if s.Formation != nil {
		summary += ", swarm " + short(s.Formation.SwarmID)
	} else if s.Initialiser {
		summary += ", initialising"
	}
	if len(errs) > 0 {
		summary += fmt.Sprintf(", %d reconciler errors", len(errs))
	}
	a.writeStatus(st, summary)
}

// alertFor is how long an alert stays in the status after its cause was last seen.
const alertFor = 10 * time.Minute

// vipHolders names the members that hold the VIP, by their gossiped metadata and this node's own
// observation; more than one name is a split brain the operator must see.
func (a *agent) vipHolders(self bool) string {
	var holders []string
	for _, p := range a.disc.Peers() {
		if p.ID == a.id {
			if self {
				holders = append(holders, a.host)
			}
			continue
		}
		if p.Alive && p.Meta.VIP {
			holders = append(holders, p.Hostname)
		}
	}
	return strings.Join(holders, ",")
}

// electionLine says why the election cannot decide yet when that is down to members with /var in RAM, which
// do not vote (election.Config.Learner); "" otherwise.
func electionLine(members []member.Member, expected int, selfInRAM bool) string {
	voters := 0
	for _, m := range members {
		if m.Alive && !m.StateInRAM {
			voters++
		}
	}
	need := election.Majority(expected)
	switch {
	case selfInRAM:
		return fmt.Sprintf("not a voter (/var is in RAM): learns the initialiser from the others; %d of the %d voters a decision needs are alive", voters, need)
	case voters < need && len(members) >= need:
		return fmt.Sprintf("waiting for voters: a decision needs %d alive members with /var on a disk, alive now: %d (members with /var in RAM do not vote)", need, voters)
	}
	return ""
}

func component(results []result, name, detail string) status.Component {
	for _, r := range results {
		if r.name != name {
			continue
		}
		if r.err != nil {
			return status.Component{State: "error", Detail: r.err.Error()}
		}
		return status.Component{Detail: detail}
	}
	return status.Component{State: "none", Detail: detail}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
