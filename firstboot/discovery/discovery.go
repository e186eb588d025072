// Package discovery finds the other nodes of the cluster and keeps the membership: hashicorp/memberlist
// (SWIM failure detection, gossip) encrypted with a key derived from the cluster key, seeded by static
// peers and by authenticated LAN beacons. It also carries the agent's messages (reliable, encrypted) and
// its replicated state (memberlist push/pull), without knowing what they mean.
package discovery

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kiln-project/kiln/firstboot/member"
)

// GossipPort is memberlist's port (TCP and UDP). Not 7946: Docker swarm's own memberlist binds that port on the
// same address, and sharing it would also expose swarm gossip wherever kiln discovery must be reachable.
const GossipPort = 7948

// Config configures discovery.
type Config struct {
	// NodeID is this node's stable id (memberlist node name); Hostname goes into metadata.
	NodeID, Hostname string
	// NoBrick and StateInRAM go into every metadata this node gossips, from the first (Meta).
	NoBrick, StateInRAM bool
	// ClusterName and Key (32 bytes) select and authenticate the cluster.
	ClusterName string
	Key         []byte
	// AcceptKeys are further 32-byte cluster keys accepted (gossip decrypted, beacons verified) but never sent
	// with: a key rotation under way.
	AcceptKeys [][]byte
	// Expected is the expected cluster size: beacons go quiet once that many members are alive.
	Expected int
	// Bind is the address memberlist binds to and advertises (the cluster interface address); Port its
	// port (GossipPort in production, 0 picks a free port in tests).
	Bind netip.Addr
	Port int
	// Peers are static seeds ("host" or "host:port"), joined directly: the way in where there is no
	// broadcast (AWS).
	Peers []string
	// PeerSource, if set, adds seeds found outside the membership (EC2 instances by tag) on every seed round;
	// the source paces its own lookups. A failed lookup is logged and the round goes on with the seeds it has.
	PeerSource PeerSource
	// Beacon configures LAN beacons; a zero Listen disables them.
	Beacon BeaconConfig
	// Tuning overrides the failure-detection timings (tests); nil means LANTuning.
	Tuning *Tuning
	// NodeKey signs this node's envelopes (LoadNodeKey); nil makes one for this run (tests).
	NodeKey ed25519.PrivateKey
	// MessageWindow is how far off the local clock an envelope's time may be; 0 means clockWindow.
	MessageWindow time.Duration
	// LocalState and MergeRemoteState carry the agent's replicated state in memberlist's encrypted
	// push/pull exchange (on join and every PushPullInterval). Either may be nil.
	LocalState       func(join bool) []byte
	MergeRemoteState func(buf []byte, join bool)
	Logger           *slog.Logger
}

// PeerSource lists seed addresses from an inventory: a cloud's instances, asked again on every seed round so
// a replacement machine is found without a config change.
type PeerSource interface {
	Peers(ctx context.Context) ([]netip.Addr, error)
}

// Tuning is the failure-detection timing.
type Tuning struct {
	ProbeInterval, ProbeTimeout time.Duration
	SuspicionMult               int
	SuspicionMaxTimeoutMult     int
	GossipInterval              time.Duration
	PushPullInterval            time.Duration
}

// LANTuning detects a dead member within about 8 s on a 3–9 node LAN. memberlist marks a node dead after
// it fails a probe and then stays suspected for SuspicionMult × ProbeInterval (its node-count scale is 1
// below 10 nodes):
//
//   - each live node probes one member per ProbeInterval (1 s) in shuffled round-robin, so with two or more
//     live probers a dead node is probed within about one interval; the probe fails after ProbeTimeout
//     (0.8 s) plus indirect probes through others;
//   - suspicion then lasts SuspicionMult (4) × 1 s = 4 s: time for a live-but-slow node to refute;
//   - total ≈ 1 + 1 + 4 ≈ 6 s typical, ≈ 8 s worst case.
//
// Tighter timings (0.8 s / 0.4 s / ×2, ≈ 3.2 s) hold on loopback but not on slow hosts: three TCG guests on
// two host cores answer UDP probes late (memberlist logs "able to connect over TCP but UDP probes failed"),
// so healthy peers are declared dead and the views diverge during formation. Failing over the
// VIP does not wait for this: keepalived's own adverts (0.5 s) do that. Push/pull every 15 s (default 30 s)
// spreads formation records quickly; at 3–9 nodes it is a few kB per exchange.
var LANTuning = Tuning{
	ProbeInterval:           1 * time.Second,
	ProbeTimeout:            800 * time.Millisecond,
	SuspicionMult:           4,
	SuspicionMaxTimeoutMult: 6,
	GossipInterval:          200 * time.Millisecond,
	PushPullInterval:        15 * time.Second,
}

// Message is one reliable message from another member.
type Message struct {
	From string
	Body []byte
}

// Peer is a member as discovery sees it: its membership entry and its latest metadata.
type Peer struct {
	member.Member
	Meta Meta
}

// Discovery is a running membership.
type Discovery struct {
	cfg    Config
	keys   Keys
	log    *slog.Logger
	ml     *memberlist.Memberlist
	events chan struct{}
	msgs   chan Message
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// addr is the advertised gossip address, fixed at start. Cached because memberlist's LocalNode hands
	// out a pointer it rewrites under its own lock.
	addr netip.AddrPort

	// mu guards meta, known and joining. It is a leaf lock: memberlist calls the delegates while holding
	// its node lock, so no memberlist method may be called with mu held.
	mu    sync.Mutex
	meta  Meta
	known map[string]Peer
	// joining throttles join attempts per address (see join); it has its own lock.
	joining *throttle
	// gossip is each member's memberlist address, copied in the event delegate (under memberlist's lock):
	// the *Node values memberlist hands out are rewritten concurrently, so they are never read later.
	gossip map[string]netip.AddrPort
	// pins is the node key each member id signs with, learned from its metadata; guarded by mu (see pin).
	pins map[string]ed25519.PublicKey
	// keyHex is this node's public node key as its metadata carries it.
	keyHex string
	// rejected throttles the log lines of refused envelopes per sender.
	rejected *throttle
	// early holds messages that arrived before their sender's node key (holdEarly); guarded by mu.
	early []earlyMsg
}

// clockWindow is the default for how far off the local clock a beacon's or an envelope's time may be: minutes,
// since fresh hardware may boot with a wrong clock and no NTP yet.
const clockWindow = 5 * time.Minute

// Start creates the memberlist, starts beacons and the seed loop, and returns at once: members appear as
// they are found (Events signals changes).
func Start(ctx context.Context, cfg Config) (*Discovery, error) {
	keys, err := DeriveKeys(cfg.ClusterName, cfg.Key)
	if err != nil {
		return nil, err
	}
	if err := validID(cfg.NodeID); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tn := LANTuning
	if cfg.Tuning != nil {
		tn = *cfg.Tuning
	}
	d := &Discovery{
		cfg: cfg, keys: keys, log: cfg.Logger.With("component", "discovery"),
		events:   make(chan struct{}, 1),
		msgs:     make(chan Message, 256),
		meta:     Meta{ID: cfg.NodeID, Hostname: cfg.Hostname, NoBrick: cfg.NoBrick, StateInRAM: cfg.StateInRAM},
		known:    map[string]Peer{},
		joining:  newThrottle(3 * time.Second),
		gossip:   map[string]netip.AddrPort{},
		pins:     map[string]ed25519.PublicKey{},
		rejected: newThrottle(time.Minute),
	}
	if d.cfg.NodeKey == nil {
		_, d.cfg.NodeKey, err = ed25519.GenerateKey(nil)
		if err != nil {
			return nil, fmt.Errorf("discovery: make node key: %w", err)
		}
	}
	if d.cfg.MessageWindow == 0 {
		d.cfg.MessageWindow = clockWindow
	}
	pub := d.cfg.NodeKey.Public().(ed25519.PublicKey)
	d.pins[cfg.NodeID] = pub
	d.keyHex = hex.EncodeToString(pub)
	d.meta.Key = d.keyHex
	var acceptGossip, acceptBeacon [][]byte
	for _, ak := range cfg.AcceptKeys {
		k, err := DeriveKeys(cfg.ClusterName, ak)
		if err != nil {
			return nil, fmt.Errorf("discovery: accepted key: %w", err)
		}
		acceptGossip, acceptBeacon = append(acceptGossip, k.Gossip), append(acceptBeacon, k.Beacon)
	}
	// memberlist encrypts with the primary key and tries every key of the ring on what it receives.
	keyring, err := memberlist.NewKeyring(append([][]byte{keys.Gossip}, acceptGossip...), keys.Gossip)
	if err != nil {
		return nil, fmt.Errorf("discovery: keyring: %w", err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.BindAddr = cfg.Bind.String()
	mc.BindPort = cfg.Port
	mc.AdvertiseAddr = cfg.Bind.String()
	mc.AdvertisePort = cfg.Port
	// AES-256-GCM on every packet and stream; with both Verify flags a node neither accepts nor sends
	// anything in plaintext (memberlist otherwise allows plaintext during key rollout).
	mc.Keyring = keyring
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.ProbeInterval, mc.ProbeTimeout = tn.ProbeInterval, tn.ProbeTimeout
	mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = tn.SuspicionMult, tn.SuspicionMaxTimeoutMult
	mc.GossipInterval, mc.PushPullInterval = tn.GossipInterval, tn.PushPullInterval
	// A dead node that comes back (reboot) with a new address may reclaim its name at once.
	mc.DeadNodeReclaimTime = 10 * time.Second
	mc.Delegate = (*delegate)(d)
	mc.Events = (*eventDelegate)(d)
	mc.LogOutput = nil
	mc.Logger = log.New(&logBridge{log: d.log, warned: newThrottle(time.Minute)}, "", 0)
	tr, err := newLimitedTransport(mc.BindAddr, mc.BindPort, mc.Logger, d.log)
	if err != nil {
		return nil, err
	}
	if mc.BindPort == 0 {
		mc.BindPort = tr.GetAutoBindPort()
		mc.AdvertisePort = mc.BindPort
	}
	mc.Transport = tr
	ml, err := memberlist.Create(mc)
	if err != nil {
		tr.Shutdown()
		return nil, fmt.Errorf("discovery: start memberlist on %s:%d: %w", cfg.Bind, cfg.Port, err)
	}
	d.ml = ml
	ln := ml.LocalNode()
	a, _ := netip.AddrFromSlice(ln.Addr)
	d.addr = netip.AddrPortFrom(a.Unmap(), ln.Port)
	ctx, d.cancel = context.WithCancel(context.WithoutCancel(ctx))

	if cfg.Beacon.Listen != "" {
		bc := cfg.Beacon
		if bc.Interval == 0 {
			bc.Interval = 2 * time.Second
		}
		if bc.QuietInterval == 0 {
			bc.QuietInterval = 15 * time.Second
		}
		if bc.Window == 0 {
			bc.Window = clockWindow
		}
		conn, err := listenBeacon(ctx, bc.Listen)
		if err != nil {
			ml.Shutdown()
			return nil, fmt.Errorf("discovery: beacon listen %s: %w", bc.Listen, err)
		}
		b := &beaconer{cfg: bc, keys: keys, acceptBeacon: acceptBeacon, conn: conn, log: d.log, replay: Replay{Window: bc.Window},
			warned: newThrottle(time.Minute), self: d.selfBeacon, quiet: d.complete,
			join: func(b Beacon) { d.join(b.NodeID, b.Addr.String()) }}
		d.wg.Add(1)
		go func() { defer d.wg.Done(); b.run(ctx) }()
	}
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.seedLoop(ctx) }()
	d.log.Info("membership started", "node", cfg.NodeID, "addr", d.Addr(), "peers", cfg.Peers, "beacon", cfg.Beacon.Listen)
	return d, nil
}

// Addr is the gossip address this node advertises.
func (d *Discovery) Addr() netip.AddrPort { return d.addr }

func (d *Discovery) selfBeacon() Beacon {
	return Beacon{NameHash: d.keys.NameHash, NodeID: d.cfg.NodeID, Addr: d.Addr(), Time: time.Now()}
}

// complete reports whether every expected member is alive (beacons can slow down).
func (d *Discovery) complete() bool { return d.ml.NumMembers() >= d.cfg.Expected }

// seedLoop joins static peers until the membership is complete, and again whenever it is not: after a
// partition heals or all nodes rebooted, a seed is how the halves find each other again.
func (d *Discovery) seedLoop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !d.complete() {
			for _, p := range d.seeds(ctx) {
				addr := p
				if _, _, err := net.SplitHostPort(p); err != nil {
					addr = net.JoinHostPort(p, strconv.Itoa(GossipPort))
				}
				d.join("", addr)
			}
		}
		t.Reset(5 * time.Second)
	}
}

// seeds are the static peers and what the peer source lists now, without this node.
func (d *Discovery) seeds(ctx context.Context) []string {
	out := d.cfg.Peers
	if d.cfg.PeerSource == nil {
		return out
	}
	found, err := d.cfg.PeerSource.Peers(ctx)
	if err != nil {
		d.log.Warn("peer source", "err", err, "using", len(found))
	}
	for _, a := range found {
		if a.Unmap() != d.Addr().Addr() {
			out = append(slices.Clone(out), a.Unmap().String())
		}
	}
	return out
}

// join asks memberlist to join addr, in the background (a join is a TCP push/pull bounded by TCPTimeout),
// at most once per 3 s per address, and not at all for a node id that is already a live member.
func (d *Discovery) join(id, addr string) {
	d.mu.Lock()
	if p, ok := d.known[id]; id != "" && ok && p.Alive {
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	if !d.joining.allow(addr, time.Now()) {
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if _, err := d.ml.Join([]string{addr}); err != nil {
			d.log.Debug("join failed", "addr", addr, "node", id, "err", err)
			return
		}
		d.log.Info("joined", "addr", addr, "node", id)
	}()
}

// Events signals (coalesced) that the membership or some metadata changed.
func (d *Discovery) Events() <-chan struct{} { return d.events }

// Messages delivers reliable messages from other members. If the agent falls behind, messages are dropped
// (and logged): every protocol on top retries on its own timer.
func (d *Discovery) Messages() <-chan Message { return d.msgs }

func (d *Discovery) notify() {
	select {
	case d.events <- struct{}{}:
	default:
	}
}

// Peers returns every member ever seen this run, self included, sorted by id; Alive tells who failure
// detection sees now (alive or suspected), and dead ones stay listed so callers can tell "gone" from "never
// seen".
func (d *Discovery) Peers() []Peer {
	d.mu.Lock()
	defer d.mu.Unlock()
	self := d.known[d.cfg.NodeID]
	self.Member = member.Member{ID: d.cfg.NodeID, Hostname: d.cfg.Hostname, Addr: d.Addr().Addr(), Alive: true, SwarmNode: d.meta.SwarmNode,
		GlusterEpoch: d.meta.GlusterEpoch, StorageTLS: d.meta.StorageTLS, NoBrick: d.meta.NoBrick, StateInRAM: d.meta.StateInRAM}
	self.Meta = d.meta
	d.known[d.cfg.NodeID] = self
	out := make([]Peer, 0, len(d.known))
	for _, p := range d.known {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Peer) int { return cmpString(a.ID, b.ID) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// SetMeta replaces this node's metadata and gossips it (if it changed) without waiting for the broadcast. ID, Hostname, NoBrick and StateInRAM
// are the Config's, whatever m says.
func (d *Discovery) SetMeta(m Meta) error {
	m.ID, m.Hostname = d.cfg.NodeID, d.cfg.Hostname
	m.NoBrick, m.StateInRAM = d.cfg.NoBrick, d.cfg.StateInRAM
	m.Key = d.keyHex
	if _, err := EncodeMeta(m); err != nil {
		return err
	}
	d.mu.Lock()
	same := d.meta == m
	d.meta = m
	d.mu.Unlock()
	if same {
		return nil
	}
	// UpdateNode queues the broadcast before it waits, and the wait is all its error is about: whether the
	// broadcast has gone out often enough yet, which gossip and push/pull settle anyway. Right after a join
	// it waited out a full 5 s timeout, and in the caller's path that stalled a joiner's reconcile pass (its
	// swarm join) for those seconds; so it waits a millisecond and its timeout is not an error.
	_ = d.ml.UpdateNode(time.Millisecond)
	return nil
}

// Send delivers body to member id over memberlist's reliable (TCP), encrypted channel.
func (d *Discovery) Send(id string, body []byte) error {
	d.mu.Lock()
	p, ok := d.known[id]
	addr := d.gossip[id]
	d.mu.Unlock()
	if !ok || !p.Alive || !addr.IsValid() {
		return fmt.Errorf("discovery: send to %s: not a live member", id)
	}
	n := &memberlist.Node{Name: id, Addr: addr.Addr().AsSlice(), Port: addr.Port()}
	if err := d.ml.SendReliable(n, seal(d.cfg.NodeKey, d.keys.NameHash, d.cfg.NodeID, time.Now(), body)); err != nil {
		return fmt.Errorf("discovery: send to %s: %w", id, err)
	}
	return nil
}

// Close leaves the cluster (so others see a clean leave, not a failure) and stops everything.
func (d *Discovery) Close() error {
	err := d.ml.Leave(2 * time.Second)
	d.cancel()
	err = errors.Join(err, d.ml.Shutdown())
	d.wg.Wait()
	return err
}

// Kill stops without leaving: to others it looks like a crash (tests of failure detection).
func (d *Discovery) Kill() error {
	d.cancel()
	err := d.ml.Shutdown()
	d.wg.Wait()
	return err
}
