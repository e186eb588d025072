package firstboot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/firstboot/discovery"
	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/netif"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/firstboot/status"
)

// world is a fake Docker shared by the test's nodes: which swarm each node's daemon is in survives an
// agent restart (as /var/lib/docker does), and every swarm init is counted.
type world struct {
	mu        sync.Mutex
	inits     []string          // node ids that ran swarm init
	nodeSwarm map[string]string // node id → swarm id
}

// fakeSwarm behaves like the swarm reconciler's contract: init only on the Initialiser without a
// formation, join the formation's swarm otherwise, announce once active as a manager.
type fakeSwarm struct {
	w  *world
	id string
	// onInit runs right after a swarm init (a crash injection point); its error is returned.
	onInit func() error
}

func (f *fakeSwarm) Name() string { return "swarm" }

func (f *fakeSwarm) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	f.w.mu.Lock()
	changed := false
	sid := f.w.nodeSwarm[f.id]
	switch {
	case sid == "" && s.Formation == nil && !s.Initialiser:
		f.w.mu.Unlock()
		s.Set("swarm", "waiting for formation")
		return false, nil
	case sid == "" && s.Formation == nil:
		f.w.inits = append(f.w.inits, f.id)
		sid = fmt.Sprintf("swarm-%d-%s", len(f.w.inits), f.id)
		f.w.nodeSwarm[f.id] = sid
		changed = true
		if f.onInit != nil {
			f.w.mu.Unlock()
			if err := f.onInit(); err != nil {
				return true, err
			}
			f.w.mu.Lock()
		}
	case sid == "":
		sid = s.Formation.SwarmID
		f.w.nodeSwarm[f.id] = sid
		changed = true
	}
	var managers []string
	for id, other := range f.w.nodeSwarm {
		if other == sid {
			managers = append(managers, id+":2377")
		}
	}
	f.w.mu.Unlock()
	if s.Formation != nil && s.Formation.SwarmID != sid {
		return changed, fmt.Errorf("swarm: in %s, formation says %s", sid, s.Formation.SwarmID)
	}
	if s.Formation == nil && !s.Initialiser {
		return changed, nil
	}
	s.Swarm.Active = true
	s.Swarm.Announce = &state.Formation{SwarmID: sid, ManagerToken: "SWMTKN-1-manager-secret", WorkerToken: "SWMTKN-1-worker-secret", ManagerAddrs: managers}
	s.Set("swarm", "manager in "+sid)
	return changed, nil
}

// orderCheck records the order reconcilers ran in, and what the previous one left in State.
type orderCheck struct {
	name string
	log  *[]string
	mu   *sync.Mutex
	// fail, when it holds an error, is what Reconcile returns.
	fail *atomic.Pointer[error]
}

func (o orderCheck) Name() string { return o.name }
func (o orderCheck) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	o.mu.Lock()
	*o.log = append(*o.log, fmt.Sprintf("%s(active=%v formation=%v)", o.name, s.Swarm.Active, s.Formation != nil))
	if len(*o.log) > 50 {
		*o.log = (*o.log)[len(*o.log)-50:]
	}
	o.mu.Unlock()
	if o.fail != nil {
		if e := o.fail.Load(); e != nil {
			return false, *e
		}
	}
	return false, nil
}

type testCluster struct {
	t       *testing.T
	w       *world
	key     config.Key
	ips     []string
	ids     []string
	port    int
	beacon  int
	dirs    []string
	cancels []context.CancelFunc
	done    []chan struct{}
	logs    []*syncBuf
	order   []string
	orderMu sync.Mutex
	onInit  map[string]func() error
	cfgErr  atomic.Pointer[error]
	fwErr   atomic.Pointer[error]
	// notes records every sd_notify state sent, per node.
	notesMu sync.Mutex
	notes   map[string][]string
	// inRAM gives the nodes whose /var is in RAM, with the reason.
	inRAM map[string]string
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func freePort(t *testing.T, network, ip string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp4", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newCluster(t *testing.T, base int) *testCluster {
	c := &testCluster{t: t, w: &world{nodeSwarm: map[string]string{}}, ids: []string{"a1", "b2", "c3"}, onInit: map[string]func() error{},
		notes: map[string][]string{}}
	for i := range 3 {
		c.ips = append(c.ips, fmt.Sprintf("127.0.0.%d", base+i))
		c.dirs = append(c.dirs, t.TempDir())
		c.logs = append(c.logs, &syncBuf{})
	}
	c.key[0] = 42
	c.port = freePort(t, "tcp", c.ips[0])
	c.beacon = freePort(t, "udp", c.ips[0])
	c.cancels = make([]context.CancelFunc, 3)
	c.done = make([]chan struct{}, 3)
	t.Cleanup(func() {
		for i := range c.cancels {
			c.stop(i)
		}
		if t.Failed() {
			for i, l := range c.logs {
				t.Logf("--- log of %s:\n%s", c.ids[i], l.String())
			}
		}
	})
	return c
}

var testTuning = discovery.Tuning{ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond, SuspicionMult: 2,
	SuspicionMaxTimeoutMult: 3, GossipInterval: 50 * time.Millisecond, PushPullInterval: time.Second}

func (c *testCluster) options(i int) Options {
	var targets []netip.AddrPort
	for _, ip := range c.ips {
		targets = append(targets, netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(c.beacon)))
	}
	id, ip := c.ids[i], c.ips[i]
	return Options{
		Logger: slog.New(slog.NewTextHandler(c.logs[i], &slog.HandlerOptions{Level: slog.LevelInfo})),
		LoadConfig: func(ctx context.Context) (*config.Config, error) {
			if e := c.cfgErr.Load(); e != nil {
				return nil, *e
			}
			return &config.Config{Cluster: config.Cluster{Name: "garage", Key: c.key, Size: 3, VIP: netip.MustParsePrefix("192.0.2.250/24")}, Source: "test"}, nil
		},
		Identity: func() (string, string, error) { return id, "kiln-" + id, nil },
		StateInRAM: func() (string, bool, error) {
			reason, ok := c.inRAM[id]
			return reason, ok, nil
		},
		HoldsVIP: func(dev string, vip netip.Addr) (bool, error) {
			return id == "b2" && dev == "lo" && vip == netip.MustParseAddr("192.0.2.250"), nil
		},
		SelectInterface: func(string, netip.Addr) (netif.Choice, error) {
			return netif.Choice{Interface: "lo", Addr: netip.MustParseAddr(ip), Subnet: netip.MustParsePrefix("127.0.0.0/8"), Reason: "test"}, nil
		},
		Reconcilers: func(env Env) (state.Pass, error) {
			return state.Pass{
				Firewall: orderCheck{name: "firewall", log: &c.order, mu: &c.orderMu, fail: &c.fwErr},
				Swarm:    &fakeSwarm{w: c.w, id: env.NodeID, onInit: c.onInit[env.NodeID]},
				Gluster:  orderCheck{name: "gluster", log: &c.order, mu: &c.orderMu},
			}, nil
		},
		StateDir:   c.dirs[i],
		StatusPath: filepath.Join(c.dirs[i], "run", "status.json"),
		Notify: func(st string) {
			c.notesMu.Lock()
			c.notes[id] = append(c.notes[id], st)
			c.notesMu.Unlock()
		},
		Watchdog: 150 * time.Millisecond,
		Discovery: func(dc *discovery.Config) {
			dc.Port = c.port
			dc.Tuning = &testTuning
			dc.Beacon = discovery.BeaconConfig{Listen: fmt.Sprintf("%s:%d", ip, c.beacon), Targets: targets, Interval: 100 * time.Millisecond}
		},
		PassInterval: 300 * time.Millisecond, SteadyInterval: 300 * time.Millisecond,
		RetryInterval: 50 * time.Millisecond,
	}
}

func (c *testCluster) start(i int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.cancels[i], c.done[i] = cancel, done
	opts := c.options(i)
	go func() {
		defer close(done)
		if err := Run(ctx, opts); err != nil {
			c.t.Errorf("Run %s: %v", c.ids[i], err)
		}
	}()
}

func (c *testCluster) stop(i int) {
	if c.cancels[i] != nil {
		c.cancels[i]()
		<-c.done[i]
		c.cancels[i] = nil
	}
}

func (c *testCluster) status(i int) *status.Status {
	st, err := status.Read(filepath.Join(c.dirs[i], "run", "status.json"))
	if err != nil {
		return &status.Status{}
	}
	return st
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(25 * time.Millisecond) // poll interval
	}
}

// converged reports whether every node is ready, in one swarm, with the same formation record.
func (c *testCluster) converged() bool {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	var sid string
	for i, id := range c.ids {
		st := c.status(i)
		if st.Phase != status.PhaseReady || c.w.nodeSwarm[id] == "" || (sid != "" && c.w.nodeSwarm[id] != sid) {
			return false
		}
		sid = c.w.nodeSwarm[id]
	}
	return true
}

func (c *testCluster) checkOneInit() {
	c.t.Helper()
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if len(c.w.inits) != 1 {
		c.t.Fatalf("swarm init ran %d times: %v", len(c.w.inits), c.w.inits)
	}
}

func TestAgentsFormOneSwarm(t *testing.T) {
	c := newCluster(t, 71)
	for i := range 3 {
		c.start(i)
	}
	waitUntil(t, 30*time.Second, "3 nodes ready in one swarm", c.converged)
	c.checkOneInit()
	if init := c.w.inits[0]; init != "a1" {
		t.Errorf("initialiser %s, want the lowest id a1 (all booted together)", init)
	}
	var ca *glustertls.CA // the initialiser's storage CA: one for the cluster, on every node
	for i := range 3 {
		p := filepath.Join(c.dirs[i], formationFile)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
		var r record
		if _, err := readJSON(p, &r); err != nil || r.StorageCA == nil || r.StorageCA.Valid() != nil {
			t.Fatalf("%s: record without a valid storage CA: %v", c.ids[i], err)
		}
		if ca == nil {
			ca = r.StorageCA
		} else if *ca != *r.StorageCA {
			t.Errorf("%s holds another storage CA than %s", c.ids[i], c.ids[0])
		}
		raw, _ := os.ReadFile(filepath.Join(c.dirs[i], "run", "status.json"))
		if bytes.Contains(raw, []byte("SWMTKN")) {
			t.Errorf("status.json of %s leaks a join token", c.ids[i])
		}
		st := c.status(i)
		if len(st.Members) != 3 || st.Members[0].ID != "a1" || st.Members[2].ID != "c3" || !st.Members[1].Alive {
			t.Errorf("status members %+v", st.Members)
		}
		if st.Swarm.State != "active" || !strings.Contains(st.Reconcilers["swarm"], "manager in swarm-1-a1") {
			t.Errorf("status swarm %+v reconcilers %v", st.Swarm, st.Reconcilers)
		}
	}
	waitUntil(t, 10*time.Second, "every node to name kiln-b2 as the VIP holder", func() bool {
		for i := range 3 {
			if c.status(i).VIPHolder != "kiln-b2" {
				return false
			}
		}
		return true
	})
	c.orderMu.Lock()
	order := strings.Join(c.order, " ")
	c.orderMu.Unlock()
	if !regexp.MustCompile(`firewall\(active=false formation=\w+\) gluster\(active=true`).MatchString(order) {
		t.Errorf("reconcilers did not run in order firewall, swarm, gluster with State passed along: %s", order)
	}
	// The initialiser publishes the record as soon as the swarm reconciler announces it, so gluster in the
	// same pass already sees it: no reconciler after the swarm ever runs on an active swarm without one.
	if strings.Contains(order, "gluster(active=true formation=false)") {
		t.Errorf("gluster ran on an active swarm before the formation record existed: %s", order)
	}

	// A member crash shows as degraded on the others; its return makes them ready again.
	c.stop(2)
	waitUntil(t, 15*time.Second, "degraded after a member stops", func() bool {
		return c.status(0).Phase == status.PhaseDegraded && c.status(1).Phase == status.PhaseDegraded
	})
	c.start(2)
	waitUntil(t, 30*time.Second, "ready again after it restarts", c.converged)
	c.checkOneInit()
}

// TestAgentCrashAfterInitConverges kills the initialiser right after swarm init, before it could announce
// the formation, and starts it again: it must resume as the initialiser, announce the swarm it made, and
// nobody else may initialise meanwhile. A second node is restarted mid-formation too. Which node wins the
// election depends on timing, so the crash is armed on every node and fires on the one that initialises.
func TestAgentCrashAfterInitConverges(t *testing.T) {
	c := newCluster(t, 81)
	var crashed atomic.Bool
	var initialiser atomic.Int32
	for i, id := range c.ids {
		c.onInit[id] = func() error {
			if crashed.CompareAndSwap(false, true) {
				initialiser.Store(int32(i))
				c.cancels[i]()
				return errors.New("crashed after init")
			}
			return nil
		}
	}
	for i := range 3 {
		c.start(i)
	}
	waitUntil(t, 30*time.Second, "the initialiser to crash after init", crashed.Load)
	k := int(initialiser.Load())
	<-c.done[k]
	c.cancels[k] = nil
	// Another node restarts while the cluster has an initialiser but no formation.
	other, third := (k+1)%3, (k+2)%3
	c.stop(other)
	if st := c.status(third); st.Phase == status.PhaseReady {
		t.Fatalf("%s ready without a formation: %+v", c.ids[third], st)
	}
	c.start(other)
	c.start(k)
	waitUntil(t, 30*time.Second, "3 nodes ready in one swarm after the crash", c.converged)
	c.checkOneInit()
}

// TestAgentWaitsForConfig: without a usable config the agent reports it and touches nothing; once a config
// appears it proceeds.
func TestAgentWaitsForConfig(t *testing.T) {
	c := newCluster(t, 91)
	bad := errors.New("config from esp: cluster.key: required")
	c.cfgErr.Store(&bad)
	c.start(0)
	waitUntil(t, 10*time.Second, "config-error status", func() bool {
		st := c.status(0)
		return st.Phase == status.PhaseConfigError && strings.Contains(st.ConfigError, "cluster.key: required")
	})
	if _, err := os.Stat(filepath.Join(c.dirs[0], electionFile)); err == nil {
		t.Fatal("election state written without a config")
	}
	// systemd sees the agent ready (so it is not restarted in a loop), the reason in STATUS, and a fed
	// watchdog while it waits.
	waitUntil(t, 5*time.Second, "READY, STATUS and WATCHDOG notifications", func() bool {
		c.notesMu.Lock()
		defer c.notesMu.Unlock()
		all := strings.Join(c.notes["a1"], "\n")
		return strings.Contains(all, "READY=1") && strings.Contains(all, "STATUS=no usable cluster config") && strings.Contains(all, "WATCHDOG=1")
	})
	c.cfgErr.Store(nil)
	waitUntil(t, 10*time.Second, "discovering once the config is there", func() bool {
		return c.status(0).Phase == status.PhaseDiscovering
	})
}

// TestAgentRestartsWhenItsAddressChanges: a lease renewal that drops the address for a moment changes
// nothing; an address that moved for good ends Run with ErrAddressChanged (systemd then restarts the agent,
// which binds the new address), after leaving the membership cleanly.
func TestAgentRestartsWhenItsAddressChanges(t *testing.T) {
	c := newCluster(t, 101)
	opts := c.options(0)
	var calls atomic.Int32
	addr := netip.MustParseAddr(c.ips[0])
	opts.SelectInterface = func(string, netip.Addr) (netif.Choice, error) {
		n := calls.Add(1)
		switch {
		case n == 3: // the address is gone for one check
			return netif.Choice{}, errors.New("no IPv4 address on lo")
		case n == 4: // another address for one check only
			return netif.Choice{Interface: "lo", Addr: netip.MustParseAddr("127.0.0.250"), Subnet: netip.MustParsePrefix("127.0.0.0/8")}, nil
		case n < 8:
			return netif.Choice{Interface: "lo", Addr: addr, Subnet: netip.MustParsePrefix("127.0.0.0/8")}, nil
		}
		return netif.Choice{Interface: "lo", Addr: netip.MustParseAddr("127.0.0.251"), Subnet: netip.MustParsePrefix("127.0.0.0/8")}, nil
	}
	opts.AddressCheckInterval = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Run(ctx, opts)
	if !errors.Is(err, ErrAddressChanged) || !strings.Contains(err.Error(), "127.0.0.251") {
		t.Fatalf("Run = %v, want ErrAddressChanged naming the new address", err)
	}
	if n := calls.Load(); n != 9 {
		// call 1 is setup; 2-7 see no change worth a restart (3 and 4 are one-check blips); 8 and 9 see the move
		t.Fatalf("restarted after %d interface selections, want 9", n)
	}
	if ctx.Err() != nil {
		t.Fatal("Run returned only at the test's deadline")
	}
}

// Fail closed: while a node cannot load its firewall ruleset, its swarm and storage reconcilers do not run and
// its status says why; once the ruleset loads, the node forms with the others.
func TestNoSwarmOrStorageWithoutFirewall(t *testing.T) {
	c := newCluster(t, 131)
	fwErr := errors.New("firewall: nft: Operation not permitted")
	c.fwErr.Store(&fwErr)
	for i := range 3 {
		c.start(i)
	}
	waitUntil(t, 20*time.Second, "every node to report the firewall wait", func() bool {
		for i := range 3 {
			st := c.status(i)
			if st == nil || !strings.Contains(st.Reconcilers["swarm"], "waiting for the firewall: firewall: nft") ||
				!strings.Contains(st.Reconcilers["gluster"], "waiting for the firewall") {
				return false
			}
		}
		return true
	})
	if n := len(c.w.inits); n != 0 {
		t.Fatalf("swarm init ran %d times without a firewall", n)
	}
	c.orderMu.Lock()
	order := strings.Join(c.order, " ")
	c.orderMu.Unlock()
	if strings.Contains(order, "gluster(") {
		t.Fatalf("gluster ran without a firewall: %s", order)
	}
	c.fwErr.Store(nil)
	waitUntil(t, 30*time.Second, "3 nodes ready in one swarm once the firewall loads", c.converged)
	c.checkOneInit()
}
