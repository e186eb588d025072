package discovery

import (
	"crypto/ed25519"
	"time"
)

// pin records pub as the node key of member id, learned from its metadata. The first key heard for an id is
// pinned (trust on first use, for this run of the agent). A different key replaces the pin only while the
// member is not alive (wasAlive false: it was seen dead or left, or never seen): that is a reimaged node, whose
// empty /var made it a new key, coming back. A new key for a member that is alive is an attempt to speak for
// it and is refused, so no key holder can sign as a live member. Called with d.mu held.
func (d *Discovery) pin(id string, pub ed25519.PublicKey, wasAlive bool) {
	if pub == nil || id == d.cfg.NodeID {
		return
	}
	cur, ok := d.pins[id]
	switch {
	case !ok:
		d.pins[id] = pub
	case cur.Equal(pub):
	case !wasAlive:
		d.pins[id] = pub
		d.log.Warn("member came back with a new node key (reimaged?); pinned it", "node", id)
	default:
		if d.rejected.allow("key:"+id, time.Now()) {
			d.log.Error("ignored a new node key for a live member: someone else holding the cluster key claims its id",
				"node", id)
		}
	}
}

// KeyOf returns the node key pinned for member id (this node's own included), or nil.
func (d *Discovery) KeyOf(id string) ed25519.PublicKey {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pins[id]
}

// PublicKey is this node's own node key.
func (d *Discovery) PublicKey() ed25519.PublicKey {
	return d.cfg.NodeKey.Public().(ed25519.PublicKey)
}

// openMessage checks a reliable message's envelope and returns its sender and body; a refused one is logged
// (throttled per sender) and dropped.
func (d *Discovery) openMessage(b []byte, now time.Time) (string, []byte, bool) {
	s, err := parseEnvelope(b)
	if err != nil {
		d.log.Warn("dropped malformed message", "err", err)
		return "", nil, false
	}
	if err := s.open(d.keys.NameHash, d.KeyOf(s.from), d.cfg.MessageWindow, now); err != nil {
		if d.rejected.allow("msg:"+s.from, now) {
			d.log.Warn("dropped message", "from", s.from, "err", err)
		}
		return "", nil, false
	}
	return s.from, s.body, true
}

// openState checks a push/pull state: a signed envelope like a message; the bare state of an agent that
// does not sign only while some live member has announced no node key (a cluster part-way through a rolling
// reimage onto signing agents).
func (d *Discovery) openState(buf []byte, now time.Time) ([]byte, bool) {
	if buf[0] != envelopeMagic {
		if !d.unsignedMemberAlive() {
			if d.rejected.allow("state:unsigned", now) {
				d.log.Warn("dropped unsigned push/pull state: every live member has a node key")
			}
			return nil, false
		}
		return buf, true
	}
	_, body, ok := d.openMessage(buf, now)
	return body, ok
}

// unsignedMemberAlive reports whether a live member other than this node has no pinned node key.
func (d *Discovery) unsignedMemberAlive() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, p := range d.known {
		if id != d.cfg.NodeID && p.Alive && d.pins[id] == nil {
			return true
		}
	}
	return false
}
