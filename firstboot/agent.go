// Package firstboot is the node agent: it loads the cluster config, discovers peers, elects the initialiser
// once per cluster lifetime, and runs the reconcilers of a state.Pass (firewall, swarm, gluster, VRRP) every
// pass, turning the config and the observed membership into a formed cluster and keeping it converged.
package firstboot

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/firstboot/discovery"
	"github.com/kiln-project/kiln/firstboot/election"
	"github.com/kiln-project/kiln/firstboot/identity"
	"github.com/kiln-project/kiln/firstboot/netif"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/firstboot/statefs"
	"github.com/kiln-project/kiln/firstboot/status"
)

// Options configure Run. Zero values take the production defaults, so `Run(ctx, Options{Logger: l,
// Reconcilers: build})` is the whole agent.
type Options struct {
	Logger *slog.Logger
	// LoadConfig finds and validates the cluster config (default: config.Load over config.Sources("/", Logger)).
	LoadConfig func(ctx context.Context) (*config.Config, error)
	// Identity returns this node's id and hostname (default: identity.Get, read-only).
	Identity func() (id, hostname string, err error)
	// StateInRAM reports whether /var is in RAM this boot, and why (default: statefs.InRAM("/")). Such a node
	// holds no brick and casts no election vote (docs/formation.md, "Nodes with /var in RAM").
	StateInRAM func() (reason string, inRAM bool, err error)
	// SelectInterface picks the cluster interface and address (default: netif.Select).
	SelectInterface func(configured string, exclude netip.Addr) (netif.Choice, error)
	// HoldsVIP reports whether the cluster interface carries the VIP now (default: netif.HasAddr).
	HoldsVIP func(dev string, vip netip.Addr) (bool, error)
	// Reconcilers builds the pass's reconcilers once config, identity and interface are known. nil
	// means none (the agent still discovers, elects and reports).
	Reconcilers func(env Env) (state.Pass, error)
	// StateDir holds election.json and formation.json (default /var/lib/kiln).
	StateDir string
	// StatusPath is the status file (default status.DefaultPath).
	StatusPath string
	// Notify sends an sd_notify state string (default: daemon.SdNotify; a no-op outside systemd).
	Notify func(state string)
	// Watchdog is the systemd watchdog interval; zero reads WATCHDOG_USEC (no watchdog when unset).
	Watchdog time.Duration
	// PeerSource returns the seed source the config asks for besides static peers (cluster.discovery: EC2
	// instances by tag), nil for none; nil means none ever. firstboot/host supplies the AWS one.
	PeerSource func(c *config.Config) discovery.PeerSource
	// Discovery adjusts the discovery config before it starts (tests: ports, beacon targets, timings).
	Discovery func(*discovery.Config)
	// Election tunes the election timings.
	Election election.Config
	// PassInterval is the pause between reconcile passes when nothing happens (default 5 s); membership
	// changes, decisions and formation records start a pass at once.
	PassInterval time.Duration
	// SteadyInterval replaces PassInterval after a pass that found the node ready with nothing to do
	// (default 15 s): each pass asks dockerd and glusterd, and on a small or emulated machine that polling is
	// a visible share of the CPU. Changes still start a pass at once.
	SteadyInterval time.Duration
	// RetryInterval is the pause before retrying config, identity, interface or discovery setup (default 10 s).
	RetryInterval time.Duration
	// ReconcileTimeout bounds one reconciler call (default 5 min: a swarm join alone may wait 90 s).
	ReconcileTimeout time.Duration
	// AddressCheckInterval is how often the agent selects the cluster interface again to notice that its
	// address changed (default 10 s; see ErrAddressChanged).
	AddressCheckInterval time.Duration
}

// Env is what building the reconcilers needs.
type Env struct {
	Config           *config.Config
	NodeID, Hostname string
	Net              netif.Choice
	Logger           *slog.Logger
}

// StateDirOrDefault is StateDir, or /var/lib/kiln when it is empty.
func (o Options) StateDirOrDefault() string {
	if o.StateDir == "" {
		return "/var/lib/kiln"
	}
	return o.StateDir
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LoadConfig == nil {
		log := o.Logger
		o.LoadConfig = func(ctx context.Context) (*config.Config, error) { return config.Load(ctx, config.Sources("/", log)) }
	}
	if o.Identity == nil {
		log := o.Logger
		o.Identity = func() (string, string, error) {
			id, err := identity.Get(identity.Options{WaitNIC: 30 * time.Second, Log: log})
			if err != nil {
				return "", "", err
			}
			return id.ID, id.Hostname, nil
		}
	}
	if o.StateInRAM == nil {
		o.StateInRAM = func() (string, bool, error) { return statefs.InRAM("/") }
	}
	if o.SelectInterface == nil {
		o.SelectInterface = netif.Select
	}
	if o.HoldsVIP == nil {
		o.HoldsVIP = netif.HasAddr
	}
	o.StateDir = o.StateDirOrDefault()
	if o.StatusPath == "" {
		o.StatusPath = status.DefaultPath
	}
	if o.Notify == nil {
		o.Notify = func(s string) { _, _ = daemon.SdNotify(false, s) }
	}
	if o.Watchdog == 0 {
		o.Watchdog, _ = daemon.SdWatchdogEnabled(false)
	}
	if o.PassInterval == 0 {
		o.PassInterval = 5 * time.Second
	}
	if o.SteadyInterval == 0 {
		o.SteadyInterval = 15 * time.Second
	}
	if o.RetryInterval == 0 {
		o.RetryInterval = 10 * time.Second
	}
	if o.ReconcileTimeout == 0 {
		o.ReconcileTimeout = 5 * time.Minute
	}
	if o.AddressCheckInterval == 0 {
		o.AddressCheckInterval = 10 * time.Second
	}
	return o
}

// ErrAddressChanged ends Run when the cluster address changed for good (a DHCP server renumbered the node, a
// new default route): memberlist cannot rebind its sockets, and the firewall, keepalived and glusterd all
// name the old address. The unit restarts the agent (Restart=always); the new run picks the new address and
// resumes from /var/lib/kiln.
var ErrAddressChanged = errors.New("cluster address changed")

// addressChecks is how many checks in a row must find another address before the agent restarts: a lease
// renewal or a link flap can take the address away for a moment, and that is no reason to restart.
const addressChecks = 2

// agent is one run of the node agent.
type agent struct {
	opts Options
	log  *slog.Logger
	cfg  *config.Config
	id   string
	host string
	// ramReason is why /var is in RAM this boot, "" when it is on a disk: then this node holds no brick and
	// does not vote.
	ramReason string
	net       netif.Choice
	disc      *discovery.Discovery
	// nodeKey signs this node's envelopes and formation records (discovery.LoadNodeKey).
	nodeKey ed25519.PrivateKey
	recs    []state.Reconciler
	kick    chan struct{}
	// beat is the unix-nano time the reconcile loop last made progress; the watchdog stops when it stalls.
	beat atomic.Int64
	// sends tracks in-flight message sends so Run returns only after they stopped.
	sends sync.WaitGroup

	// mu guards el, rec and the request/conflict bookkeeping below: the control goroutine (election,
	// messages) and the reconcile loop both read and change them.
	mu         sync.Mutex
	el         *election.Node
	rec        *record
	asked      map[string]time.Time
	conflicted map[string]bool
	// quorumAt is when a pass last saw this node as a ready manager of a swarm with quorumManagers reachable
	// managers (the swarm reconciler's announce), quorumSince when the passes started seeing that without a
	// gap of quorumFresh; refused is the alert about the last newer epoch refused, at refusedAt.
	quorumAt       time.Time
	quorumSince    time.Time
	quorumManagers int
	refused        string
	refusedAt      time.Time

	// Reconcile-loop-only state.
	swarmNode string // last observed swarm node ID of this node, gossiped in metadata
	// glusterEpoch is the last observed epoch of this node's glusterd state, gossiped in metadata.
	glusterEpoch string
	// storageTLS: this node's glusterd speaks TLS (gossiped); once on, it stays on for the install.
	storageTLS bool
	// metaPhase and metaVIP are what the last publishMeta said (republishMeta repeats them).
	metaPhase status.Phase
	metaVIP   bool
	epoch     int // formation epoch this node was last ready in (epochFile)
	everReady bool
	lastErr   string
	lastErrAt time.Time
}

// Run is the agent: it loads config and identity, picks the cluster interface, starts discovery, then
// elects (once per cluster lifetime), and runs the reconcilers in order every pass until ctx ends. It
// never returns an error for a problem it can wait out (no config yet, no network yet): it reports it in
// the status file and retries, changing nothing. Every decision is persisted or re-observable, so the
// process may be killed at any instant and started again.
func Run(parent context.Context, opts Options) error {
	ctx, restart := context.WithCancelCause(parent)
	defer restart(nil)
	opts = opts.withDefaults()
	a := &agent{opts: opts, log: opts.Logger, kick: make(chan struct{}, 1), asked: map[string]time.Time{}, conflicted: map[string]bool{}}
	a.beat.Store(time.Now().UnixNano())
	// Type=notify: ready means "running and reporting", not "cluster formed" (that may take minutes, or
	// forever without a config; systemd must not time the start out and restart-loop us).
	opts.Notify("READY=1\nSTATUS=starting")
	defer opts.Notify("STOPPING=1")

	var wg sync.WaitGroup
	if a.opts.Watchdog > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); a.watchdog(ctx) }()
	}
	if a.setup(ctx) {
		wg.Add(2)
		go func() { defer wg.Done(); a.control(ctx) }()
		go func() { defer wg.Done(); a.watchAddress(ctx, restart) }()
		a.reconcileLoop(ctx)
	}
	// ctx has ended: stop our goroutines first, then leave the membership they use.
	wg.Wait()
	if a.disc != nil {
		if err := a.disc.Close(); err != nil {
			a.log.Warn("leave membership", "err", err)
		}
		a.sends.Wait()
	}
	if err := context.Cause(ctx); errors.Is(err, ErrAddressChanged) {
		return err
	}
	return nil
}

// watchAddress selects the cluster interface again every AddressCheckInterval and ends the run through
// restart once addressChecks checks in a row found another interface or address than the one in use.
func (a *agent) watchAddress(ctx context.Context, restart context.CancelCauseFunc) {
	t := time.NewTicker(a.opts.AddressCheckInterval)
	defer t.Stop()
	moved := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, err := a.opts.SelectInterface(a.cfg.Cluster.Interface, a.cfg.Cluster.VIP.Addr())
		if err != nil || (c.Interface == a.net.Interface && c.Addr == a.net.Addr) {
			moved = 0 // no address for a moment, or the same one: nothing to rebind
			continue
		}
		if moved++; moved < addressChecks {
			continue
		}
		a.log.Warn("cluster address changed: restarting to rebind", "was", a.net.Addr, "dev_was", a.net.Interface,
			"now", c.Addr, "dev", c.Interface)
		restart(fmt.Errorf("%w: %s on %s, was %s on %s", ErrAddressChanged, c.Addr, c.Interface, a.net.Addr, a.net.Interface))
		return
	}
}

// setup gets config, identity, interface, election state, discovery and reconcilers, retrying each until
// it works. It reports false when ctx ended first.
func (a *agent) setup(ctx context.Context) bool {
	retry := func(what string, f func() error) bool {
		for {
			a.beat.Store(time.Now().UnixNano()) // waiting for config is progress, not a hang
			err := f()
			if err == nil {
				return true
			}
			a.log.Warn("setup: retrying", "step", what, "err", err, "in", a.opts.RetryInterval)
			select {
			case <-ctx.Done():
				return false
			case <-time.After(a.opts.RetryInterval):
			}
		}
	}
	return retry("config", func() error {
		cfg, err := a.opts.LoadConfig(ctx)
		if err != nil {
			a.writeStatus(&status.Status{Phase: status.PhaseConfigError, ConfigError: err.Error()}, "no usable cluster config: "+err.Error())
			return err
		}
		a.cfg = cfg
		return nil
	}) && retry("identity", func() error {
		id, host, err := a.opts.Identity()
		if err != nil {
			a.setupError(fmt.Errorf("identity: %w", err))
			return err
		}
		a.id, a.host = id, host
		a.log = a.log.With("node", id)
		return nil
	}) && retry("state disk", func() error {
		reason, inRAM, err := a.opts.StateInRAM()
		if err != nil {
			a.setupError(err)
			return err
		}
		if inRAM {
			a.ramReason = reason
			a.log.Warn("/var is in RAM: this node holds no gluster brick and does not vote in the election", "reason", reason)
		}
		return nil
	}) && retry("interface", func() error {
		vip := a.cfg.Cluster.VIP.Addr()
		c, err := a.opts.SelectInterface(a.cfg.Cluster.Interface, vip)
		if err != nil {
			a.setupError(err)
			return err
		}
		a.net = c
		a.log.Info("cluster interface", "dev", c.Interface, "addr", c.Addr, "subnet", c.Subnet, "reason", c.Reason)
		return nil
	}) && retry("state", a.loadState) && retry("discovery", func() error {
		err := a.startDiscovery(ctx)
		if err != nil {
			a.setupError(err)
		}
		return err
	}) && retry("reconcilers", func() error {
		if a.opts.Reconcilers == nil {
			return nil
		}
		pass, err := a.opts.Reconcilers(Env{Config: a.cfg, NodeID: a.id, Hostname: a.host, Net: a.net, Logger: a.log})
		if err != nil {
			err = fmt.Errorf("build reconcilers: %w", err)
			a.setupError(err)
			return err
		}
		a.recs = pass.Steps()
		return nil
	})
}

func (a *agent) setupError(err error) {
	a.writeStatus(&status.Status{Phase: status.PhaseStarting, LastError: err.Error(), LastErrorAt: time.Now().UTC()}, "starting: "+err.Error())
}

// loadState restores the election acceptor state and the formation record. A corrupt file is an error to
// retry (and to fix by hand), never a reason to start over: starting over could vote twice.
func (a *agent) loadState() error {
	key, err := discovery.LoadNodeKey(filepath.Join(a.opts.StateDir, discovery.NodeKeyFile))
	if err != nil {
		a.setupError(err)
		return err
	}
	a.nodeKey = key
	var p election.Persistent
	if _, err := readJSON(filepath.Join(a.opts.StateDir, electionFile), &p); err != nil {
		a.setupError(err)
		return err
	}
	var r record
	ok, err := readJSON(filepath.Join(a.opts.StateDir, formationFile), &r)
	if err != nil {
		a.setupError(err)
		return err
	}
	var le localEpoch
	if _, err := readJSON(filepath.Join(a.opts.StateDir, epochFile), &le); err != nil {
		a.setupError(err)
		return err
	}
	a.epoch = le.Epoch
	ec := a.opts.Election
	ec.Learner = a.ramReason != "" // what it promised would be forgotten at the next reboot
	a.el = election.New(a.id, a.cfg.Cluster.Size, p, ec)
	if ok {
		if err := r.valid(); err != nil {
			err = fmt.Errorf("%s: %w", formationFile, err)
			a.setupError(err)
			return err
		}
		a.rec = &r
		_ = a.el.Learn(r.Initialiser)
		a.log.Info("resuming formed cluster", "swarm", r.SwarmID, "initialiser", r.Initialiser)
	} else if d := a.el.Decided(); d != "" {
		a.log.Info("resuming: initialiser already decided", "initialiser", d)
	}
	return nil
}

func (a *agent) startDiscovery(ctx context.Context) error {
	c := a.cfg.Cluster
	dc := discovery.Config{
		NodeID: a.id, Hostname: a.host, ClusterName: c.Name, Key: c.Key[:], Expected: c.Size,
		NoBrick: a.ramReason != "", StateInRAM: a.ramReason != "",
		Bind: a.net.Addr, Port: discovery.GossipPort,
		LocalState: a.localState, MergeRemoteState: a.mergeRemoteState,
		NodeKey: a.nodeKey, Logger: a.log,
	}
	for _, p := range c.Peers {
		dc.Peers = append(dc.Peers, p.String())
	}
	for _, k := range c.AcceptKeys {
		dc.AcceptKeys = append(dc.AcceptKeys, k[:])
	}
	if a.opts.PeerSource != nil {
		dc.PeerSource = a.opts.PeerSource(a.cfg)
	}
	dc.Beacon.Listen = fmt.Sprintf(":%d", discovery.BeaconPort)
	if a.net.Broadcast.IsValid() {
		dc.Beacon.Targets = []netip.AddrPort{netip.AddrPortFrom(a.net.Broadcast, discovery.BeaconPort)}
	}
	if a.opts.Discovery != nil {
		a.opts.Discovery(&dc)
	}
	d, err := discovery.Start(ctx, dc)
	if err != nil {
		return err
	}
	a.disc = d
	a.publishMeta(status.PhaseDiscovering, false)
	return nil
}

// wake asks the reconcile loop for a pass now.
func (a *agent) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *agent) writeStatus(st *status.Status, summary string) {
	st.NodeID, st.Hostname = a.id, a.host
	if a.ramReason != "" {
		st.NoBrick = statefs.NoBrickLine(a.ramReason)
	}
	if a.cfg != nil {
		st.Cluster, st.ConfigSource, st.Expected = a.cfg.Cluster.Name, a.cfg.Source, a.cfg.Cluster.Size
		st.ConfigSkipped = a.cfg.Skipped
		if a.cfg.Cluster.VIP.IsValid() {
			st.VIP = a.cfg.Cluster.VIP.String()
		}
	}
	if err := status.Write(a.opts.StatusPath, st); err != nil {
		a.log.Warn("write status", "err", err)
	}
	// sd_notify separates assignments by newlines: a multi-line error (errors.Join) must become one line.
	a.opts.Notify("STATUS=" + strings.Join(strings.Fields(summary), " "))
}
