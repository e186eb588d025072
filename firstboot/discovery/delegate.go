package discovery

import (
	"io"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kiln-project/kiln/firstboot/member"
)

// delegate implements memberlist.Delegate.
type delegate Discovery

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	m := d.meta
	d.mu.Unlock()
	b, err := EncodeMeta(m)
	if err != nil || len(b) > limit {
		d.log.Error("node metadata over the limit; sending id only", "err", err)
		b, _ = EncodeMeta(Meta{ID: m.ID})
	}
	return b
}

func (d *delegate) NotifyMsg(b []byte) {
	from, body, ok := (*Discovery)(d).openMessage(b, time.Now())
	if !ok {
		return
	}
	select {
	case d.msgs <- Message{From: from, Body: body}:
	default:
		d.log.Warn("message queue full; dropped message", "from", from)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

func (d *delegate) LocalState(join bool) []byte {
	if d.cfg.LocalState == nil {
		return nil
	}
	body := d.cfg.LocalState(join)
	if len(body) == 0 {
		return nil
	}
	return seal(d.cfg.NodeKey, d.keys.NameHash, d.cfg.NodeID, time.Now(), body)
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	if d.cfg.MergeRemoteState == nil || len(buf) == 0 {
		return
	}
	body, ok := (*Discovery)(d).openState(buf, time.Now())
	if ok && len(body) > 0 {
		d.cfg.MergeRemoteState(body, join)
	}
}

// eventDelegate implements memberlist.EventDelegate: it keeps the peer table and signals changes.
type eventDelegate Discovery

func (e *eventDelegate) update(n *memberlist.Node, alive bool) {
	d := (*Discovery)(e)
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		d.log.Warn("ignored bad metadata", "node", n.Name, "err", err)
		meta = Meta{ID: n.Name}
	}
	if meta.ID != n.Name {
		d.log.Warn("metadata id does not match node name", "node", n.Name, "meta_id", meta.ID)
		meta.ID = n.Name
	}
	addr, _ := netip.AddrFromSlice(n.Addr)
	d.mu.Lock()
	old, seen := d.known[n.Name]
	d.pin(n.Name, meta.PublicKey(), seen && old.Alive)
	p := Peer{Member: member.Member{ID: n.Name, Hostname: meta.Hostname, Addr: addr.Unmap(), Alive: alive, SwarmNode: meta.SwarmNode,
		GlusterEpoch: meta.GlusterEpoch, StorageTLS: meta.StorageTLS, NoBrick: meta.NoBrick, StateInRAM: meta.StateInRAM}, Meta: meta}
	switch {
	case alive:
	case seen && !old.Alive:
		p.DownSince = old.DownSince
	default:
		p.DownSince = time.Now().UTC()
	}
	d.known[n.Name] = p
	d.gossip[n.Name] = netip.AddrPortFrom(addr.Unmap(), n.Port)
	d.mu.Unlock()
	if n.Name != d.cfg.NodeID && (!seen || old.Alive != alive) {
		if alive {
			d.log.Info("member up", "node", n.Name, "addr", p.Addr)
		} else {
			d.log.Warn("member down", "node", n.Name, "addr", p.Addr)
		}
	}
	d.notify()
}

func (e *eventDelegate) NotifyJoin(n *memberlist.Node)   { e.update(n, true) }
func (e *eventDelegate) NotifyLeave(n *memberlist.Node)  { e.update(n, false) }
func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) { e.update(n, true) }

var _ io.Writer = (*logBridge)(nil)
