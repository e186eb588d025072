package gluster

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// PlanHeal is the coordinator's healing decision, after the volume exists. Pure.
//   - A brick on an address that no alive member has, whose peer has been disconnected for ReplaceAfter,
//     moves to an alive pool member without a brick that may hold one (lowest ID), while a majority of the
//     bricks is up (never act without quorum); then a full heal. So does, at once, a brick on the address of
//     an alive member that may hold none (member.NoBrick: it came back with /var in RAM and will not serve
//     that brick). A dead peer without bricks is detached.
//   - Pending heal entries with every brick connected: start an index heal (the self-heal daemon would
//     get there within 10 minutes; this makes "node back" converge in seconds).
func PlanHeal(s *state.State, obs HealObserved, replaceAfter time.Duration) []Action {
	if obs.Volume == nil || obs.Volume.Status != "Started" {
		return nil
	}
	b := surveyBricks(s, obs, replaceAfter)
	newcomers := b.newcomers
	var acts []Action
	for _, brick := range obs.Volume.Bricks {
		host, _, _ := strings.Cut(brick, ":")
		if !(b.gone(host) || b.brickless[host]) || !b.quorum || len(newcomers) == 0 {
			continue
		}
		n := newcomers[0]
		newcomers = newcomers[1:]
		acts = append(acts, Action{Kind: ActReplaceBrick, Bricks: []string{brick, n.Addr.String() + ":" + BrickPath}})
	}
	if len(acts) > 0 {
		return append(acts, Action{Kind: ActHealFull})
	}
	if want := replicaCount(s); obs.Volume.Replica < want && len(newcomers) > 0 && b.up == len(obs.Volume.Bricks) {
		n := newcomers[0]
		return []Action{{Kind: ActAddBrick, Replica: obs.Volume.Replica + 1, Bricks: []string{n.Addr.String() + ":" + BrickPath}}, {Kind: ActHealFull}}
	}
	for _, p := range obs.Peers {
		if b.hosts[p.Hostname] || !b.gone(p.Hostname) || !b.quorum {
			continue
		}
		acts = append(acts, Action{Kind: ActDetach, Host: p.Hostname})
	}
	if indexHealDue(obs.Heal) {
		acts = append(acts, Action{Kind: ActHeal})
	}
	return acts
}

// brickSurvey is what PlanHeal reads off the volume's bricks and the pool.
type brickSurvey struct {
	// hosts are the addresses that hold a brick; up counts the bricks on this node or a connected peer, and
	// quorum says they are a majority.
	hosts  map[string]bool
	up     int
	quorum bool
	// newcomers are the alive members in the pool without a brick that may hold one, self excepted, lowest ID
	// first.
	newcomers []member.Member
	// gone reports whether the member at host is gone for good: no alive member has its address, and its peer
	// has been seen disconnected for replaceAfter.
	gone func(host string) bool
	// brickless are the addresses of alive members that may hold no brick: a brick there is lost as well.
	brickless map[string]bool
}

func surveyBricks(s *state.State, obs HealObserved, replaceAfter time.Duration) brickSurvey {
	alive := map[string]bool{}
	b := brickSurvey{hosts: map[string]bool{}, brickless: map[string]bool{}}
	for _, m := range aliveMembers(s) {
		alive[m.Addr.String()] = true
		if m.NoBrick {
			b.brickless[m.Addr.String()] = true
		}
	}
	for _, brick := range obs.Volume.Bricks {
		host, _, _ := strings.Cut(brick, ":")
		b.hosts[host] = true
		switch {
		case b.brickless[host]:
			// Its glusterd is connected, but its brick is not there to serve.
		case host == s.Self.Addr.String():
			b.up++
		default:
			if p := findPeerName(obs.Peers, host); p != nil && p.Connected {
				b.up++
			}
		}
	}
	b.quorum = b.up > len(obs.Volume.Bricks)/2
	b.gone = func(host string) bool {
		if alive[host] {
			return false
		}
		p := findPeerName(obs.Peers, host)
		if p != nil && p.Connected {
			return false
		}
		since, ok := obs.DownSince[host]
		return ok && obs.Now.Sub(since) >= replaceAfter
	}
	for _, m := range aliveMembers(s) {
		a := m.Addr.String()
		if m.ID == s.Self.ID || b.hosts[a] || m.NoBrick {
			continue
		}
		if p := findPeerName(obs.Peers, a); p != nil && p.InCluster() {
			b.newcomers = append(b.newcomers, m)
		}
	}
	return b
}

// indexHealDue: heal info shows entries pending heal, and every brick connected.
func indexHealDue(heal []HealBrick) bool {
	pending, connected := 0, true
	for _, h := range heal {
		if h.Entries < 0 || h.Status != "Connected" {
			connected = false
		}
		pending += max(h.Entries, 0)
	}
	return connected && pending > 0
}

// replaceAfter is how long a member must be gone before its brick moves (cluster.replaceAfter), 10 minutes
// when the config leaves it unset.
func replaceAfter(s *state.State) time.Duration {
	if s.ReplaceAfter == 0 {
		return 10 * time.Minute
	}
	return s.ReplaceAfter
}

// PoolUUIDs is the address → UUID map the formation record carries (self included), from the coordinator's
// pool view. Peers are known by their address (kiln probes by address).
func PoolUUIDs(self netip.Addr, selfUUID string, peers []Peer) map[string]string {
	if selfUUID == "" {
		return nil
	}
	m := map[string]string{self.String(): selfUUID}
	for _, p := range peers {
		if _, err := netip.ParseAddr(p.Hostname); err == nil && p.UUID != "" {
			m[p.Hostname] = p.UUID
		}
	}
	return m
}

// RecoverPlan is what `kiln-firstboot recover --force-new-cluster` does to the volume on the survivor: lift
// both quorums (the lost majority can no longer form one), shrink the volume to the local brick, and
// detach every other peer. The reconcilers later restore the options and grow the volume back with
// newcomers (ActAddBrick). Pure.
func RecoverPlan(self netip.Addr, vol *Volume, peers []Peer) ([]Action, error) {
	if vol == nil {
		return nil, errors.New("gluster: recover: no volume " + VolumeName)
	}
	mine := self.String() + ":" + BrickPath
	if !slices.Contains(vol.Bricks, mine) {
		return nil, fmt.Errorf("gluster: recover: this node (%s) holds no brick of %s; recover on a node that does", self, VolumeName)
	}
	acts := []Action{
		{Kind: ActSet, Options: []Option{{"cluster.server-quorum-type", "none"}, {"cluster.quorum-type", "none"}}},
	}
	var others []string
	for _, b := range vol.Bricks {
		if b != mine {
			others = append(others, b)
		}
	}
	if len(others) > 0 {
		acts = append(acts, Action{Kind: ActRemoveBricks, Replica: 1, Bricks: others})
	}
	for _, p := range peers {
		acts = append(acts, Action{Kind: ActDetach, Host: p.Hostname})
	}
	return acts, nil
}
