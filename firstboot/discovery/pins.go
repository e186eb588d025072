package discovery

import (
	"bytes"
	"crypto/ed25519"
	"errors"
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
		d.releaseEarly(id, pub)
	case cur.Equal(pub):
	case !wasAlive:
		d.pins[id] = pub
		d.log.Warn("member came back with a new node key (reimaged?); pinned it", "node", id)
		d.releaseEarly(id, pub)
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
// (throttled per sender) and dropped, unless it may only be early (holdEarly).
func (d *Discovery) openMessage(b []byte, now time.Time) (string, []byte, bool) {
	return d.open(b, now, true)
}

// open is openMessage; hold says whether a message signed by a key not pinned yet is held for it.
func (d *Discovery) open(b []byte, now time.Time, hold bool) (string, []byte, bool) {
	s, err := parseEnvelope(b)
	if err != nil {
		d.log.Warn("dropped malformed message", "err", err)
		return "", nil, false
	}
	if err := s.open(d.keys.NameHash, d.KeyOf(s.from), d.cfg.MessageWindow, now); err != nil {
		if hold && d.holdEarly(s, err, now) {
			return "", nil, false
		}
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
	_, body, ok := d.open(buf, now, false)
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

// Bounds of the early-message hold: a handful of messages of the first seconds of a member, never a queue.
const (
	earlyMax   = 16
	earlyBytes = 256 << 10
	earlyTTL   = 10 * time.Second
)

// earlyMsg is a signed message held until its sender's node key is pinned.
type earlyMsg struct {
	s  sealed
	at time.Time
}

func (e earlyMsg) size() int { return len(e.s.msg) + len(e.s.sig) }

// holdEarly keeps a signed message whose sender's key this node has not learned yet (or whose sender was
// seen gone, so it may be back with a new key) and reports whether it did. memberlist delivers a message as
// soon as its sender knows this node, and the sender's metadata with its key can arrive a moment later in
// another packet: dropped, the first election proposal of a formation waits out the round timeout and a
// backoff, seconds of formation time. A held message is opened when the key is pinned (releaseEarly), with
// the same checks as any other; one not opened within earlyTTL is dropped. Bounded by earlyMax and
// earlyBytes, the oldest going first.
func (d *Discovery) holdEarly(s sealed, err error, now time.Time) bool {
	if !s.signed {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !errors.Is(err, ErrNoKey) && !(errors.Is(err, ErrSignature) && !d.known[s.from].Alive) {
		return false
	}
	var kept []earlyMsg
	for _, e := range d.early {
		if now.Sub(e.at) <= earlyTTL {
			kept = append(kept, e)
		}
	}
	// The message's bytes belong to memberlist's buffer, which it reuses once NotifyMsg returns.
	s.msg, s.sig = bytes.Clone(s.msg), bytes.Clone(s.sig)
	kept = append(kept, earlyMsg{s: s, at: now})
	total := 0
	for _, e := range kept {
		total += e.size()
	}
	for len(kept) > earlyMax || total > earlyBytes {
		total -= kept[0].size()
		kept = kept[1:]
	}
	d.early = kept
	d.log.Debug("held a message until its sender's node key is known", "from", s.from)
	return true
}

// releaseEarly opens the held messages of id against its newly pinned key and delivers those that pass.
// Called with d.mu held (from pin); it never blocks.
func (d *Discovery) releaseEarly(id string, pub ed25519.PublicKey) {
	now := time.Now()
	var kept []earlyMsg
	for _, e := range d.early {
		if e.s.from != id {
			kept = append(kept, e)
			continue
		}
		if now.Sub(e.at) > earlyTTL {
			continue
		}
		if err := e.s.open(d.keys.NameHash, pub, d.cfg.MessageWindow, now); err != nil {
			d.log.Warn("dropped message", "from", id, "err", err)
			continue
		}
		select {
		case d.msgs <- Message{From: id, Body: e.s.body}:
		default:
			d.log.Warn("message queue full; dropped message", "from", id)
		}
	}
	d.early = kept
}
