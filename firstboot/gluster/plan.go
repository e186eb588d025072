package gluster

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// stage is the part of a pass a plan is asked for. A pass runs the stages in this order, each on its own
// observation: a stage's actions change what the next one sees, and each observes only what its plan reads
// (heal info walks every brick's index; a peer's own view is a network round trip, and every gluster CLI
// call costs about a second on a TCG guest). So the plans stay apart, one per stage, rather than one plan
// over one observation of everything.
type stage int

const (
	// stageSelf is this node's own standing, before it takes part in the pool: a reset after a `recover` it
	// missed (PlanEpochReset) comes before the repairs of a reimaged node (PlanSelfRepair).
	stageSelf stage = iota
	// stageForm is the pool and the volume (Plan).
	stageForm
	// stageHeal is the started volume, on the coordinator (PlanHeal).
	stageHeal
)

// planStage is the gluster plan: the next steps for this node in stage st, given the state and what the
// stage observed. Pure.
func planStage(st stage, s *state.State, obs HealObserved) []Action {
	switch st {
	case stageSelf:
		if acts := PlanEpochReset(s, obs); len(acts) > 0 {
			return acts
		}
		return PlanSelfRepair(s, obs)
	case stageForm:
		return Plan(s, obs.Observed)
	case stageHeal:
		return PlanHeal(s, obs, replaceAfter(s))
	}
	return nil
}

// Coordinator is the member that probes peers and creates the volume: the swarm initialiser while it is alive,
// else the lowest-ID alive member whose glusterd is in a pool (its reported GlusterEpoch is neither fresh nor
// unknown), else the lowest-ID alive member. Every node computes the same answer from the same membership. A
// newcomer (a replacement, a reimaged machine before it is back) has a fresh glusterd: as coordinator it would
// probe pool members from outside the pool, joining them to its own view of it instead of being probed in,
// and the pool's own coordinator then fails to probe it ("already part of another cluster").
func Coordinator(s *state.State) (member.Member, bool) {
	alive := aliveMembers(s)
	if s.Formation != nil {
		for _, m := range alive {
			if m.ID == s.Formation.Initialiser {
				return m, true
			}
		}
	}
	for _, m := range alive {
		if m.GlusterEpoch != "" && m.GlusterEpoch != member.FreshGluster {
			return m, true
		}
	}
	if len(alive) == 0 {
		return member.Member{}, false
	}
	return alive[0], true
}

// Plan is the formation decision: given the state and what glusterd reports, the next steps for this node
// towards a pool of every member and a started volume with kiln's options. Pure.
func Plan(s *state.State, obs Observed) []Action {
	coord, ok := Coordinator(s)
	if !ok {
		return nil
	}
	if coord.ID != s.Self.ID {
		return planFollower(s, obs, coord)
	}
	var acts []Action
	for _, m := range aliveMembers(s) {
		if m.ID != s.Self.ID && findPeer(obs.Peers, m.Addr) == nil && probeable(s, m) {
			acts = append(acts, Action{Kind: ActProbe, Host: m.Addr.String()})
		}
	}
	if obs.Volume == nil {
		if ms := brickMembers(s, obs); ms != nil && meshLag(s, obs) == "" {
			var bricks []string
			for _, m := range ms {
				bricks = append(bricks, m.Addr.String()+":"+BrickPath)
			}
			// The created volume is known without asking glusterd again: no option set, not started. So
			// its options and start follow in the same round (an observation costs two CLI calls, about a
			// second on a loaded node); if the create fails, the actions after it do not run.
			acts = append(acts, Action{Kind: ActCreate, Replica: len(ms), Bricks: bricks})
			acts = append(acts, planVolume(s, &Volume{Name: VolumeName, Status: "Created"})...)
		}
		return acts
	}
	return append(acts, planVolume(s, obs.Volume)...)
}

// planVolume: kiln's options on an existing volume, then its start.
func planVolume(s *state.State, vol *Volume) []Action {
	var acts []Action
	want := Options(s.PeerAddrs())
	if tlsCluster(s) {
		maps.Copy(want, TLSOptions(vol.Options[SSLAllow], s.Members, s.Self))
	}
	var set []Option
	for _, k := range sortedKeys(want) {
		if vol.Options[k] != want[k] {
			set = append(set, Option{Key: k, Value: want[k]})
		}
	}
	if len(set) > 0 {
		acts = append(acts, Action{Kind: ActSet, Options: set})
	}
	if vol.Status != "Started" {
		acts = append(acts, Action{Kind: ActStart})
	}
	return acts
}

// brickMembers are the members a new volume gets its bricks on: the lowest-ID alive members in this node's
// pool (self is always in its own pool) that may hold a brick (not member.NoBrick), as many as the replica
// count; nil while fewer are in.
//
// The replica count follows cluster.size alone (min(3, size)), never how many members may hold a brick: a
// cluster of three with one brickless member waits for a third brick-capable member rather than create a
// replica-2 volume, which would split-brain on a partition and could not be grown back without a human
// (docs/formation.md, "Nodes with /var in RAM"). The wait is reported (brickShortage).
func brickMembers(s *state.State, obs Observed) []member.Member {
	replica := replicaCount(s)
	var ready []member.Member
	for _, m := range aliveMembers(s) {
		if m.NoBrick {
			continue
		}
		if m.ID == s.Self.ID {
			ready = append(ready, m)
		} else if p := findPeer(obs.Peers, m.Addr); p != nil && p.InCluster() {
			ready = append(ready, m)
		}
	}
	if len(ready) < replica {
		return nil
	}
	return ready[:replica]
}

// replicaCount is the volume's replica count: 3, or cluster.size when smaller.
func replicaCount(s *state.State) int { return min(3, max(s.Expected, 1)) }

// brickShortage says why no volume can be created for lack of members that may hold a brick, when enough
// members are alive but too many of them are brickless ("" otherwise: formation just waits for members, as
// without brickless ones).
func brickShortage(s *state.State) string {
	replica := replicaCount(s)
	alive := aliveMembers(s)
	var capable int
	var brickless []string
	for _, m := range alive {
		if m.NoBrick {
			brickless = append(brickless, m.Addr.String())
		} else {
			capable++
		}
	}
	if len(alive) < replica || capable >= replica || len(brickless) == 0 {
		return ""
	}
	return fmt.Sprintf("waiting for a member that may hold a brick: the replica-%d volume needs %d, %d alive (%s: no brick, /var in RAM)",
		replica, replica, capable, strings.Join(brickless, ", "))
}

// meshLag is unmeshed for the bricks a create would use now ("" when there are not enough of them yet).
func meshLag(s *state.State, obs Observed) string {
	ms := brickMembers(s, obs)
	if ms == nil {
		return ""
	}
	return unmeshed(s.Self, ms, obs.Views)
}

// unmeshed says why the volume cannot be created on bricks yet, "" when it can. Every brick's glusterd stages
// the create and refuses it unless it is connected to every other brick's host; the coordinator's own view
// is not enough: a follower learns of the other followers from the coordinator and connects to them seconds
// later. A create in that window fails in staging ("Staging failed on <follower>. Error: Host <other
// follower> not connected"), and a failed create leaves marks that hold formation back for
// createRetryAfter. So each other brick member's own peer list must show the other followers, and as many
// peers in the pool as there are other bricks, all connected (the coordinator may be listed under the name
// its first probe gave it rather than its address: planFollower). A member whose list could not be read is
// not held against the create: the check guards against a known race, it must not become a way to stall.
func unmeshed(self member.Member, bricks []member.Member, views map[string][]Peer) string {
	for _, b := range bricks {
		if b.ID == self.ID {
			continue
		}
		view, ok := views[b.Addr.String()]
		if !ok {
			continue
		}
		in := 0
		for _, p := range view {
			if p.InCluster() {
				in++
			}
		}
		for _, o := range bricks {
			if o.ID == self.ID || o.ID == b.ID {
				continue
			}
			if p := findPeer(view, o.Addr); p == nil || !p.InCluster() {
				return fmt.Sprintf("%s does not see %s in its pool yet", b.Addr, o.Addr)
			}
		}
		if in < len(bricks)-1 {
			return fmt.Sprintf("%s sees %d of the %d other bricks' hosts in its pool", b.Addr, in, len(bricks)-1)
		}
	}
	return ""
}

// probeable reports whether the coordinator may probe m: its glusterd is in no pool, or its state belongs to
// the record's epoch. A member back from before a `recover` still holds the old pool until it resets its
// glusterd (PlanEpochReset); probed in those seconds, it leaves an entry under its old UUID in the recovered
// pool beside the one of its fresh glusterd, and every add-brick then fails with "Another transaction is
// in progress". A member that has not reported yet is not probed either: its first pass
// reports it, even before its swarm is up. In a cluster with a storage CA, a member whose glusterd does not
// speak TLS yet (member.StorageTLS) would fail the probe's handshake: it is probed once it says it does.
func probeable(s *state.State, m member.Member) bool {
	if tlsCluster(s) && !m.StorageTLS {
		return false
	}
	if m.GlusterEpoch == member.FreshGluster {
		return true
	}
	e, err := strconv.Atoi(m.GlusterEpoch)
	return err == nil && e >= recordEpoch(s)
}

// tlsCluster reports whether the cluster's storage runs with TLS: its record carries a storage CA.
func tlsCluster(s *state.State) bool {
	return s.Formation != nil && s.Formation.StorageCA != nil
}

// recordEpoch is the formation record's epoch (0 before there is a record).
func recordEpoch(s *state.State) int {
	if s.Formation == nil {
		return 0
	}
	return s.Formation.Epoch
}

// GlusterEpoch is what this node reports as member.GlusterEpoch: FreshGluster with no peer, else the newest
// of the epoch it was last ready in, the epoch it was reset for, and the record's epoch once the record
// names this glusterd's UUID at its address. Pure.
func GlusterEpoch(s *state.State, peers []Peer, selfUUID string, resetEpoch int) string {
	if len(peers) == 0 {
		return member.FreshGluster
	}
	e := max(s.LocalEpoch, resetEpoch)
	if s.Formation != nil && selfUUID != "" && s.Formation.GlusterPeers[s.Self.Addr.String()] == selfUUID {
		e = max(e, s.Formation.Epoch)
	}
	return strconv.Itoa(e)
}

// planFollower: the lowest-ID other member probes the coordinator back once it is in the pool, so the
// coordinator is known by its address rather than by whatever name the first probe recorded (glusterdocs#706).
func planFollower(s *state.State, obs Observed, coord member.Member) []Action {
	if len(obs.Peers) == 0 || findPeer(obs.Peers, coord.Addr) != nil {
		return nil
	}
	for _, m := range aliveMembers(s) {
		if m.ID != coord.ID {
			if m.ID == s.Self.ID {
				return []Action{{Kind: ActProbe, Host: coord.Addr.String()}}
			}
			return nil
		}
	}
	return nil
}

// PlanEpochReset: after a `recover`, a node whose glusterd still belongs to the old pool (it has peers, and
// the new pool's map does not know it by its UUID) must start over as a fresh peer. Pure.
//
// Once per epoch: right after the reset the coordinator probes the fresh glusterd, which then has a peer
// before the record's map names its new UUID; reading that as "still the old pool" would reset it every pass,
// until systemd refuses to start glusterd again.
func PlanEpochReset(s *state.State, obs HealObserved) []Action {
	if s.Formation == nil || s.Formation.Epoch <= s.LocalEpoch || len(obs.Peers) == 0 || s.Formation.GlusterPeers == nil {
		return nil
	}
	if obs.ResetEpoch >= s.Formation.Epoch {
		return nil
	}
	if s.Formation.GlusterPeers[s.Self.Addr.String()] == obs.SelfUUID {
		return nil
	}
	return []Action{{Kind: ActResetPeer, Value: fmt.Sprint(s.Formation.Epoch)}}
}

// PlanSelfRepair is what a node does for itself: adopt its old UUID when it was reimaged, probe its way back
// into the pool, and prepare its empty brick. Pure.
func PlanSelfRepair(s *state.State, obs HealObserved) []Action {
	self := s.Self.Addr.String()
	if s.Formation == nil {
		return nil
	}
	old, known := s.Formation.GlusterPeers[self]
	if known && obs.SelfUUID != "" && obs.SelfUUID != old && len(obs.Peers) == 0 && obs.Volume == nil {
		// A fresh glusterd on an address the pool knows: it was this machine before the reimage.
		others := map[string]string{}
		for addr, id := range s.Formation.GlusterPeers {
			if addr != self {
				others[addr] = id
			}
		}
		return []Action{{Kind: ActAdoptUUID, Value: old, Pool: others}}
	}
	if known && obs.SelfUUID == old && len(obs.Peers) == 0 {
		// Adopted, not yet back in the pool: probe a member the pool knows, which re-syncs peers and volumes.
		for _, m := range aliveMembers(s) {
			if m.ID != s.Self.ID {
				if _, inPool := s.Formation.GlusterPeers[m.Addr.String()]; inPool {
					return []Action{{Kind: ActProbe, Host: m.Addr.String()}}
				}
			}
		}
		return nil
	}
	if known && obs.SelfUUID == old && len(obs.Peers) > 0 && obs.Volume == nil {
		return []Action{{Kind: ActRestartGlusterd}}
	}
	if obs.Volume != nil && obs.Volume.Status == "Started" && slices.Contains(obs.Volume.Bricks, self+":"+BrickPath) && !obs.BrickPrepared &&
		!s.Self.NoBrick && s.NoBrick == "" {
		// (A brickless node whose address still holds a brick, from before it lost its state disk, never
		// recreates it: in RAM the full heal would copy the whole volume into memory, to lose it at the next
		// reboot. The coordinator moves that brick instead: PlanHeal.)
		return []Action{{Kind: ActPrepareBrick, Value: obs.Volume.ID}, {Kind: ActStartForce}}
	}
	if obs.FullHealOwed && obs.Volume != nil && obs.Volume.Status == "Started" && obs.BrickOnline && obs.HealDaemonOnline && obs.OnlineFor >= healSettle {
		return []Action{{Kind: ActHealOwnBrick}}
	}
	if obs.FullHealOwed && obs.BrickPrepared && obs.Volume != nil && obs.Volume.Status == "Started" && !obs.BrickOnline &&
		obs.OfflineFor >= brickStartRetry {
		// The prepared brick never came up: the start that followed its preparation failed (glusterd refuses
		// a transaction while another member holds the cluster lock: "Another transaction is in progress"),
		// and nothing else starts it; the volume would run on two bricks for good.
		return []Action{{Kind: ActStartForce}}
	}
	return nil
}

// brickStartRetry is how long the prepared brick may stay offline before it is started again: a start that
// worked brings it up within seconds, and a retry every pass would itself hold glusterd's cluster lock.
const brickStartRetry = 30 * time.Second

// healSettle is how long the prepared brick and this node's self-heal daemon must have been online before
// the full heal is launched. The full crawl that fills an empty brick runs in this node's self-heal daemon
// over its local brick: launched before the daemon has connected to the restarted brick, it crawls nothing
// and reports success (a launch right after `start force` leaves the brick empty), and nothing launches it
// again. `volume status` shows the brick online as soon as glusterd has its port; the
// daemon reconnects within a few seconds of that.
const healSettle = 10 * time.Second

// isolated: this glusterd has the UUID the pool knows this address by, but no peers (it adopted it and no
// pool member is alive to probe yet).
func isolated(s *state.State, obs HealObserved) bool {
	if s.Formation == nil {
		return false
	}
	old, known := s.Formation.GlusterPeers[s.Self.Addr.String()]
	return known && len(s.Formation.GlusterPeers) > 1 && obs.SelfUUID == old && len(obs.Peers) == 0
}
