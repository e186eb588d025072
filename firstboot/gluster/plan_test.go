package gluster

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

var (
	mA = member.Member{ID: "a", Addr: netip.MustParseAddr("10.77.0.11"), Alive: true, GlusterEpoch: member.FreshGluster}
	mB = member.Member{ID: "b", Addr: netip.MustParseAddr("10.77.0.12"), Alive: true, GlusterEpoch: member.FreshGluster}
	mC = member.Member{ID: "c", Addr: netip.MustParseAddr("10.77.0.13"), Alive: true, GlusterEpoch: member.FreshGluster}
)

// brickless is m with /var in RAM: it may hold no brick.
func brickless(m member.Member) member.Member {
	m.NoBrick, m.StateInRAM = true, true
	return m
}

// inEpoch is m reporting its glusterd state as epoch e's ("" for not reported).
func inEpoch(m member.Member, e string) member.Member {
	m.GlusterEpoch = e
	return m
}

// recovered is st with a record of epoch 1 (one `recover` ago) coordinated by a.
func recovered(self member.Member, ms ...member.Member) *state.State {
	s := st(self, ms...)
	s.Formation.Epoch = 1
	return s
}

func st(self member.Member, ms ...member.Member) *state.State {
	return &state.State{Inputs: state.Inputs{Expected: 3, Formation: &state.Formation{Initialiser: "a"}}, Observed: state.Observed{Self: self, Members: ms}, Swarm: state.SwarmOutput{Active: true}}
}

func peer(m member.Member, inCluster bool) Peer {
	p := Peer{Hostname: m.Addr.String(), Connected: inCluster, State: "Peer in Cluster"}
	if !inCluster {
		p.State = "Probe Sent to Peer"
	}
	return p
}

const (
	uuidA = "aaaaaaaa-0000-4000-8000-00000000000a"
	uuidB = "bbbbbbbb-0000-4000-8000-00000000000b"
	uuidC = "cccccccc-0000-4000-8000-00000000000c"
	uuidX = "99999999-0000-4000-8000-000000000099"
	volID = "12345678-1234-4123-8123-123456789abc"
)

func bricks(ms ...member.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Addr.String()+":"+BrickPath)
	}
	return out
}

func kinds(acts []Action) string {
	var ks []string
	for _, a := range acts {
		ks = append(ks, a.String())
	}
	return strings.Join(ks, "; ")
}

func TestPlan(t *testing.T) {
	brick := func(m member.Member) string { return m.Addr.String() + ":" + BrickPath }
	mD := member.Member{ID: "d", Addr: mC.Addr.Next(), Alive: true, GlusterEpoch: member.FreshGluster}
	started := &Volume{Status: "Started", Options: Options(addrs([]member.Member{mA, mB, mC}))}
	deadB := mB
	deadB.Alive = false
	cases := []struct {
		name string
		s    *state.State
		obs  Observed
		want []string
	}{
		{"coordinator probes everyone", st(mA, mA, mB, mC), Observed{}, []string{"probe 10.77.0.12", "probe 10.77.0.13"}},
		{"probed but not yet in cluster: no create", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, false)}}, nil},
		{"all in, and in each other's pools: create replica 3", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Views: map[string][]Peer{
			"10.77.0.12": {{Hostname: "kiln-a", Connected: true, State: "Peer in Cluster"}, peer(mC, true)},
			"10.77.0.13": {peer(mA, true), peer(mB, true)},
		}}, []string{"create replica 3 " + brick(mA) + " " + brick(mB) + " " + brick(mC), setFor(mA, mB, mC), "start"}},
		{"all in, but b not yet connected to c: no create", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Views: map[string][]Peer{
			"10.77.0.12": {peer(mA, true), peer(mC, false)},
			"10.77.0.13": {peer(mA, true), peer(mB, true)},
		}}, nil},
		{"all in, c's peer list unreadable: not held against the create", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Views: map[string][]Peer{
			"10.77.0.12": {peer(mA, true), peer(mC, true)},
		}}, []string{"create replica 3 " + brick(mA) + " " + brick(mB) + " " + brick(mC), setFor(mA, mB, mC), "start"}},
		{"all in, b lists c but not yet connected to the coordinator: no create", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Views: map[string][]Peer{
			"10.77.0.12": {peer(mA, false), peer(mC, true)},
		}}, nil},
		{"all in, but c does not list the coordinator yet: no create", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Views: map[string][]Peer{
			"10.77.0.12": {peer(mA, true), peer(mC, true)},
			"10.77.0.13": {peer(mB, true)},
		}}, nil},
		{"only two of three members: wait", st(mA, mA, mB), Observed{Peers: []Peer{peer(mB, true)}}, nil},
		{"created: options then start", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Volume: &Volume{Status: "Created", Options: map[string]string{}}},
			[]string{setFor(mA, mB, mC), "start"}},
		{"converged: nothing", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Volume: started}, nil},
		{"follower b probes the coordinator back", st(mB, mA, mB, mC), Observed{Peers: []Peer{{Hostname: "kiln-a", Connected: true, State: "Peer in Cluster"}}}, []string{"probe 10.77.0.11"}},
		{"follower c does not", st(mC, mA, mB, mC), Observed{Peers: []Peer{{Hostname: "kiln-a", Connected: true}}}, nil},
		{"follower not yet in a pool waits", st(mB, mA, mB, mC), Observed{}, nil},
		{"dead coordinator: next lowest alive takes over", func() *state.State {
			dead := mA
			dead.Alive = false
			return st(mB, dead, mB, mC)
		}(), Observed{Peers: []Peer{peer(mA, false), peer(mC, true)}, Volume: started}, nil},
		{"dead member is not probed", st(mA, mA, deadB, mC), Observed{Peers: []Peer{peer(mC, true)}}, nil},
		{"rebooted, no peer seen yet: auth.allow keeps the recorded pool", func() *state.State {
			s := st(mA, mA)
			s.Formation = &state.Formation{GlusterPeers: map[string]string{"10.77.0.12": "u-b", "10.77.0.13": "u-c", "10.77.0.11": "u-a"}}
			return s
		}(), Observed{Volume: started}, nil},
		{"a member that has not reported its glusterd's epoch is not probed", st(mA, mA, inEpoch(mB, ""), mC), Observed{},
			[]string{"probe 10.77.0.13"}},
		{"after a recover: a member still in the old pool is not probed", recovered(mA, mA, inEpoch(mB, "0"), mC), Observed{},
			[]string{"probe 10.77.0.13"}},
		{"after a recover: a member reset for the new epoch is probed", recovered(mA, mA, inEpoch(mB, "1"), mC), Observed{},
			[]string{"probe 10.77.0.12", "probe 10.77.0.13"}},
		// Brickless members (/var in RAM) are probed into the pool like any member, and skipped for bricks.
		{"brickless coordinator: bricks on the next three", func() *state.State {
			s := st(brickless(mA), brickless(mA), mB, mC, mD)
			s.Expected = 4
			return s
		}(), Observed{Peers: []Peer{peer(mB, true), peer(mC, true), peer(mD, true)}},
			[]string{"create replica 3 " + brick(mB) + " " + brick(mC) + " " + brick(mD), setFor(mA, mB, mC, mD), "start"}},
		{"brickless member between: skipped, the next capable one holds the brick", func() *state.State {
			s := st(mA, mA, brickless(mB), mC, mD)
			s.Expected = 4
			return s
		}(), Observed{Peers: []Peer{peer(mB, true), peer(mC, true), peer(mD, true)}},
			[]string{"create replica 3 " + brick(mA) + " " + brick(mC) + " " + brick(mD), setFor(mA, mB, mC, mD), "start"}},
		{"three members, one brickless: probe it, but no replica-2 volume", st(mA, mA, mB, brickless(mC)),
			Observed{Peers: []Peer{peer(mB, true)}}, []string{"probe 10.77.0.13"}},
		{"three members in the pool, one brickless: wait for a third brick", st(mA, mA, mB, brickless(mC)),
			Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}}, nil},
		{"single-node cluster: plain volume", &state.State{Inputs: state.Inputs{Expected: 1}, Observed: state.Observed{Self: mA, Members: []member.Member{mA}}}, Observed{},
			[]string{"create replica 1 " + brick(mA), setFor(mA), "start"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, a := range Plan(c.s, c.obs) {
				got = append(got, a.String())
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("Plan =\n  %q\nwant\n  %q", got, c.want)
			}
		})
	}
}

func TestGlusterEpoch(t *testing.T) {
	two := []Peer{peer(mB, true), peer(mC, true)}
	cases := []struct {
		name       string
		s          *state.State
		peers      []Peer
		uuid       string
		resetEpoch int
		want       string
	}{
		{"no peer: fresh, whatever the epochs", recovered(mA, mA), nil, "u-a", 0, member.FreshGluster},
		{"formed in epoch 0", st(mA, mA, mB, mC), two, "u-a", 0, "0"},
		{"back from before a recover: still the old epoch", recovered(mA, mA, mB, mC), two, "u-a", 0, "0"},
		{"reset for epoch 1", recovered(mA, mA, mB, mC), two, "u-new", 1, "1"},
		{"ready in epoch 1", func() *state.State { s := recovered(mA, mA, mB, mC); s.LocalEpoch = 1; return s }(), two, "u-a", 0, "1"},
		{"the record names this glusterd", func() *state.State {
			s := recovered(mA, mA, mB, mC)
			s.Formation.GlusterPeers = map[string]string{"10.77.0.11": "u-a"}
			return s
		}(), two, "u-a", 0, "1"},
		{"the record names another UUID at this address", func() *state.State {
			s := recovered(mA, mA, mB, mC)
			s.Formation.GlusterPeers = map[string]string{"10.77.0.11": "u-other"}
			return s
		}(), two, "u-a", 0, "0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := GlusterEpoch(c.s, c.peers, c.uuid, c.resetEpoch); got != c.want {
				t.Errorf("GlusterEpoch = %q, want %q", got, c.want)
			}
		})
	}
}

func TestPlanSelfRepair(t *testing.T) {
	pool := map[string]string{"10.77.0.11": uuidA, "10.77.0.12": uuidB, "10.77.0.13": uuidC}
	started := &Volume{ID: volID, Status: "Started", Bricks: bricks(mA, mB, mC)}
	tests := []struct {
		name string
		pool map[string]string
		obs  HealObserved
		want string
	}{
		{"reimaged: fresh glusterd on a known address adopts the old UUID", pool,
			HealObserved{SelfUUID: uuidX}, "adopt glusterd UUID " + uuidC},
		{"adopted, pool empty: probe a pool member", pool,
			HealObserved{SelfUUID: uuidC}, "probe 10.77.0.11"},
		{"probed back in, volumes not synced yet: restart glusterd", pool,
			HealObserved{SelfUUID: uuidC, Observed: Observed{Peers: []Peer{peer(mA, false)}}}, "restart-glusterd"},
		{"back in the pool, brick directory without volume id: recreate and start it (a full heal is owed)", pool,
			HealObserved{SelfUUID: uuidC, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}},
			"prepare-brick; start-force"},
		{"full heal owed, brick online, self-heal daemon not yet: wait", pool,
			HealObserved{SelfUUID: uuidC, BrickPrepared: true, FullHealOwed: true, BrickOnline: true, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}}, ""},
		{"full heal owed, both online but only just: wait for the daemon to connect to the brick", pool,
			HealObserved{SelfUUID: uuidC, BrickPrepared: true, FullHealOwed: true, BrickOnline: true, HealDaemonOnline: true, OnlineFor: time.Second, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}}, ""},
		{"full heal owed, both online for healSettle: launch it", pool,
			HealObserved{SelfUUID: uuidC, BrickPrepared: true, FullHealOwed: true, BrickOnline: true, HealDaemonOnline: true, OnlineFor: healSettle, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}}, "heal-own-brick"},
		{"full heal owed, the prepared brick offline (its start failed): wait a little first", pool,
			HealObserved{SelfUUID: uuidC, BrickPrepared: true, FullHealOwed: true, OfflineFor: time.Second, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}}, ""},
		{"full heal owed, the prepared brick offline for brickStartRetry: start it again", pool,
			HealObserved{SelfUUID: uuidC, BrickPrepared: true, FullHealOwed: true, OfflineFor: brickStartRetry, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}}, "start-force"},
		{"healthy node", pool,
			HealObserved{SelfUUID: uuidC, BrickPrepared: true, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}}, ""},
		{"new machine, address unknown to the pool: nothing to adopt", map[string]string{"10.77.0.11": uuidA},
			HealObserved{SelfUUID: uuidX}, ""},
		{"fresh glusterd but already has peers (formation in progress): never adopt", pool,
			HealObserved{SelfUUID: uuidX, Observed: Observed{Peers: []Peer{peer(mA, true)}}}, ""},
		{"no map yet (record from before)", nil, HealObserved{SelfUUID: uuidX}, ""},
		{"back with /var in RAM: adopts its UUID like a reimaged node", pool,
			HealObserved{SelfUUID: uuidX}, "adopt glusterd UUID " + uuidC},
		{"back with /var in RAM, in the pool, its address still holds a brick: never recreated in RAM", pool,
			HealObserved{SelfUUID: uuidC, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := st(mC, mA, mB, mC)
			if strings.Contains(tc.name, "/var in RAM") {
				s = st(brickless(mC), mA, mB, brickless(mC))
				s.NoBrick = "no brick: /var is in RAM (no local disk for kiln-state)"
			}
			s.Formation.GlusterPeers = tc.pool
			if got := kinds(PlanSelfRepair(s, tc.obs)); got != tc.want {
				t.Errorf("PlanSelfRepair = %q, want %q", got, tc.want)
			}
		})
	}
	// Adopting carries the rest of the pool, which becomes the node's peer files.
	s := st(mC, mA, mB, mC)
	s.Formation.GlusterPeers = pool
	acts := PlanSelfRepair(s, HealObserved{SelfUUID: uuidX})
	want := map[string]string{"10.77.0.11": uuidA, "10.77.0.12": uuidB}
	if len(acts) != 1 || !maps.Equal(acts[0].Pool, want) {
		t.Errorf("adopt action %+v, want pool %v", acts, want)
	}
}

func TestPlanHeal(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	mD := member.Member{ID: "d", Addr: mC.Addr.Next(), Alive: true}
	mE := member.Member{ID: "e", Addr: mD.Addr.Next(), Alive: true}
	deadC := mC
	deadC.Alive = false
	started := &Volume{ID: volID, Status: "Started", Bricks: bricks(mA, mB, mC)}
	cDown := peer(mC, false)
	cDown.Connected = false
	long := map[string]time.Time{"10.77.0.13": now.Add(-11 * time.Minute)}
	short := map[string]time.Time{"10.77.0.13": now.Add(-time.Minute)}
	healthy := []HealBrick{{Status: "Connected"}, {Status: "Connected"}, {Status: "Connected"}}
	pending := []HealBrick{{Status: "Connected", Entries: 4}, {Status: "Connected"}, {Status: "Connected", Entries: 1}}
	oneDown := []HealBrick{{Status: "Connected", Entries: 4}, {Status: "Connected"}, {Status: "Transport endpoint is not connected", Entries: -1}}
	tests := []struct {
		name    string
		members []member.Member
		peers   []Peer
		vol     *Volume
		heal    []HealBrick
		down    map[string]time.Time
		want    string
	}{
		{"healthy", []member.Member{mA, mB, mC}, []Peer{peer(mB, true), peer(mC, true)}, started, healthy, nil, ""},
		{"node back, entries pending, all bricks connected: heal", []member.Member{mA, mB, mC}, []Peer{peer(mB, true), peer(mC, true)}, started, pending, nil, "heal"},
		{"a brick still down: the heal waits", []member.Member{mA, mB, deadC}, []Peer{peer(mB, true), cDown}, started, oneDown, short, ""},
		{"dead inside the grace period, newcomer waiting: wait", []member.Member{mA, mB, deadC, mD}, []Peer{peer(mB, true), cDown, peer(mD, true)}, started, oneDown, short, ""},
		{"dead past the grace period, newcomer in the pool: replace, then full heal", []member.Member{mA, mB, deadC, mD}, []Peer{peer(mB, true), cDown, peer(mD, true)}, started, oneDown, long,
			"replace-brick 10.77.0.13:" + BrickPath + " 10.77.0.14:" + BrickPath + "; heal-full"},
		{"dead past the grace period, newcomer not yet in the pool: wait", []member.Member{mA, mB, deadC, mD}, []Peer{peer(mB, true), cDown}, started, oneDown, long, ""},
		{"dead past the grace period, no newcomer: keep the brick", []member.Member{mA, mB, deadC}, []Peer{peer(mB, true), cDown}, started, oneDown, long, ""},
		{"replaced: detach the dead peer", []member.Member{mA, mB, deadC, mD}, []Peer{peer(mB, true), cDown, peer(mD, true)},
			&Volume{ID: volID, Status: "Started", Bricks: bricks(mA, mB, mD)}, healthy, long, "peer detach 10.77.0.13"},
		{"alive member with a disconnected peer entry (glusterd restarting): never replaced", []member.Member{mA, mB, mC, mD}, []Peer{peer(mB, true), cDown, peer(mD, true)}, started, oneDown, long, ""},
		{"dead past the grace period, the only newcomer brickless: keep the brick", []member.Member{mA, mB, deadC, brickless(mD)},
			[]Peer{peer(mB, true), cDown, peer(mD, true)}, started, oneDown, long, ""},
		{"dead past the grace period, a brickless newcomer skipped for a capable one", []member.Member{mA, mB, deadC, brickless(mD), mE},
			[]Peer{peer(mB, true), cDown, peer(mD, true), peer(mE, true)}, started, oneDown, long,
			"replace-brick 10.77.0.13:" + BrickPath + " 10.77.0.15:" + BrickPath + "; heal-full"},
		{"a brick's member back with /var in RAM: its brick moves at once", []member.Member{mA, mB, brickless(mC), mD},
			[]Peer{peer(mB, true), peer(mC, true), peer(mD, true)}, started, oneDown, nil,
			"replace-brick 10.77.0.13:" + BrickPath + " 10.77.0.14:" + BrickPath + "; heal-full"},
		{"a brick's member back with /var in RAM, no capable newcomer: the brick stays, the peer too", []member.Member{mA, mB, brickless(mC)},
			[]Peer{peer(mB, true), peer(mC, true)}, started, oneDown, nil, ""},
		{"a brickless member without a brick is never detached", []member.Member{mA, mB, mC, brickless(mD)},
			[]Peer{peer(mB, true), peer(mC, true), peer(mD, true)}, started, healthy, long, ""},
		{"replica below the cluster's: grow with a capable newcomer, never a brickless one", []member.Member{mA, mB, brickless(mD), mE},
			[]Peer{peer(mB, true), peer(mD, true), peer(mE, true)}, &Volume{ID: volID, Status: "Started", Replica: 2, Bricks: bricks(mA, mB)}, healthy, nil,
			"add-brick replica 3 10.77.0.15:" + BrickPath + "; heal-full"},
		{"replica below the cluster's, only a brickless newcomer: stay", []member.Member{mA, mB, brickless(mD)},
			[]Peer{peer(mB, true), peer(mD, true)}, &Volume{ID: volID, Status: "Started", Replica: 2, Bricks: bricks(mA, mB)}, healthy, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := st(mA, tc.members...)
			obs := HealObserved{Observed: Observed{Peers: tc.peers, Volume: tc.vol}, Heal: tc.heal, DownSince: tc.down, Now: now}
			if got := kinds(PlanHeal(s, obs, 10*time.Minute)); got != tc.want {
				t.Errorf("PlanHeal = %q, want %q", got, tc.want)
			}
		})
	}
	// Without a majority of bricks up nothing is replaced (two bricks gone: no quorum to act with).
	deadB := mB
	deadB.Alive = false
	bDown := peer(mB, false)
	bDown.Connected = false
	twoDown := map[string]time.Time{"10.77.0.12": now.Add(-time.Hour), "10.77.0.13": now.Add(-time.Hour)}
	s := st(mA, mA, deadB, deadC, mD)
	obs := HealObserved{Observed: Observed{Peers: []Peer{bDown, cDown, peer(mD, true)}, Volume: started}, DownSince: twoDown, Now: now}
	if got := kinds(PlanHeal(s, obs, 10*time.Minute)); got != "" {
		t.Errorf("without quorum PlanHeal = %q, want nothing", got)
	}
	// A brick on a brickless member is not up, though its glusterd is connected: with b dead as well, one
	// brick of three is up, no quorum.
	s = st(mA, mA, deadB, brickless(mC), mD, mE)
	obs = HealObserved{Observed: Observed{Peers: []Peer{bDown, peer(mC, true), peer(mD, true), peer(mE, true)}, Volume: started},
		DownSince: map[string]time.Time{"10.77.0.12": now.Add(-time.Hour)}, Now: now}
	if got := kinds(PlanHeal(s, obs, 10*time.Minute)); got != "" {
		t.Errorf("one brick up of three (b dead, c brickless): PlanHeal = %q, want nothing", got)
	}
}

func TestPoolUUIDs(t *testing.T) {
	pb, pc := peer(mB, true), peer(mC, false)
	pb.UUID, pc.UUID = uuidB, uuidC
	m := PoolUUIDs(mA.Addr, uuidA, []Peer{pb, pc})
	if len(m) != 3 || m["10.77.0.11"] != uuidA || m["10.77.0.13"] != uuidC {
		t.Errorf("PoolUUIDs = %v", m)
	}
	if PoolUUIDs(mA.Addr, "", nil) != nil {
		t.Error("unknown self UUID must give no map (never publish a partial one)")
	}
}

func TestRecoverPlan(t *testing.T) {
	vol := &Volume{ID: volID, Status: "Started", Replica: 3, Bricks: bricks(mA, mB, mC)}
	acts, err := RecoverPlan(mA.Addr, vol, []Peer{peer(mB, false), peer(mC, false)})
	if err != nil {
		t.Fatal(err)
	}
	want := "set cluster.server-quorum-type none cluster.quorum-type none; remove-brick replica 1 10.77.0.12:" + BrickPath +
		" 10.77.0.13:" + BrickPath + " force; peer detach 10.77.0.12; peer detach 10.77.0.13"
	if got := kinds(acts); got != want {
		t.Errorf("RecoverPlan =\n %q\nwant\n %q", got, want)
	}
	if _, err := RecoverPlan(mC.Addr.Next().Next(), vol, nil); err == nil {
		t.Error("recover on a node without a brick must refuse")
	}
	if _, err := RecoverPlan(mA.Addr, nil, nil); err == nil {
		t.Error("recover without a volume must refuse")
	}
}

func TestPlanHealGrowsAfterRecover(t *testing.T) {
	mD := member.Member{ID: "d", Addr: mC.Addr.Next(), Alive: true}
	one := &Volume{ID: volID, Status: "Started", Replica: 1, Bricks: bricks(mA)}
	s := st(mA, mA, mD)
	obs := HealObserved{Observed: Observed{Peers: []Peer{peer(mD, true)}, Volume: one}, Now: time.Now()}
	if got, want := kinds(PlanHeal(s, obs, time.Minute)), "add-brick replica 2 10.77.0.14:"+BrickPath+"; heal-full"; got != want {
		t.Errorf("PlanHeal = %q, want %q", got, want)
	}
	// Not while the newcomer is still being probed, nor beyond the cluster's replica count.
	obs.Peers = []Peer{peer(mD, false)}
	if got := kinds(PlanHeal(s, obs, time.Minute)); got != "" {
		t.Errorf("newcomer not in the pool yet: PlanHeal = %q", got)
	}
	full := &Volume{ID: volID, Status: "Started", Replica: 3, Bricks: bricks(mA, mB, mC)}
	s = st(mA, mA, mB, mC, mD)
	obs = HealObserved{Observed: Observed{Peers: []Peer{peer(mB, true), peer(mC, true), peer(mD, true)}, Volume: full}, Now: time.Now()}
	if got := kinds(PlanHeal(s, obs, time.Minute)); got != "" {
		t.Errorf("a 4th member of a full replica 3: PlanHeal = %q, want nothing (it is a client)", got)
	}
}

func TestPlanEpochReset(t *testing.T) {
	s := st(mC, mA, mB, mC)
	s.Formation.Epoch = 1
	s.Formation.GlusterPeers = map[string]string{"10.77.0.11": uuidA}
	old := HealObserved{SelfUUID: uuidC, Observed: Observed{Peers: []Peer{peer(mA, false), peer(mB, false)}}}
	if got := kinds(PlanEpochReset(s, old)); got != "reset to a fresh peer (epoch 1)" {
		t.Errorf("node from before the recovery: %q", got)
	}
	s.LocalEpoch = 1
	if got := kinds(PlanEpochReset(s, old)); got != "" {
		t.Errorf("node of the current epoch: %q", got)
	}
	s.LocalEpoch = 0
	fresh := HealObserved{SelfUUID: uuidX}
	if got := kinds(PlanEpochReset(s, fresh)); got != "" {
		t.Errorf("fresh node (no peers): %q", got)
	}
	// Reset once for epoch 1: the coordinator then probes the fresh glusterd, which has a peer before the
	// record's map names its new UUID. That must not read as "still the old pool".
	probed := HealObserved{SelfUUID: uuidX, ResetEpoch: 1, Observed: Observed{Peers: []Peer{peer(mA, true)}}}
	if got := kinds(PlanEpochReset(s, probed)); got != "" {
		t.Errorf("fresh glusterd already reset for this epoch, probed in: %q", got)
	}
	s.Formation.Epoch = 2
	if got := kinds(PlanEpochReset(s, probed)); got != "reset to a fresh peer (epoch 2)" {
		t.Errorf("reset for epoch 1, cluster recovered again (epoch 2): %q", got)
	}
	s.Formation.Epoch = 1
	s.Formation.GlusterPeers["10.77.0.13"] = uuidC
	if got := kinds(PlanEpochReset(s, old)); got != "" {
		t.Errorf("node the recovered pool knows: %q", got)
	}
}

// In a cluster with a storage CA the coordinator probes only members that speak TLS, sets TLS on the I/O path
// before the first start, and keeps auth.ssl-allow to the members' ids: grown from what the volume has,
// never narrowed to the members it happens to see, and without the departed.
func TestPlanTLS(t *testing.T) {
	ca := newCA(t)
	tls := func(s *state.State) *state.State {
		s.Formation = &state.Formation{Initialiser: "a", StorageCA: ca, GlusterPeers: map[string]string{
			mA.Addr.String(): "u-a", mB.Addr.String(): "u-b", mC.Addr.String(): "u-c"}}
		return s
	}
	on := func(m member.Member) member.Member { m.StorageTLS = true; return m }
	departed := func(m member.Member) member.Member { m.Alive, m.Departed = false, true; return m }
	ready := Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}}
	volume := func(status, allow string) Observed {
		o := ready
		opts := Options([]netip.Addr{mA.Addr, mB.Addr, mC.Addr})
		opts["client.ssl"], opts["server.ssl"] = "on", "on"
		if allow != "" {
			opts[SSLAllow] = allow
		}
		o.Volume = &Volume{Status: status, Options: opts}
		return o
	}
	cases := []struct {
		name string
		s    *state.State
		obs  Observed
		want []string
	}{
		{"members not on TLS yet are not probed", tls(st(on(mA), on(mA), mB, on(mC))), Observed{}, []string{"probe 10.77.0.13"}},
		{"plaintext cluster probes everyone", st(mA, mA, mB, mC), Observed{}, []string{"probe 10.77.0.12", "probe 10.77.0.13"}},
		{"created: TLS options before the start", tls(st(on(mA), on(mA), on(mB), on(mC))),
			Observed{Peers: ready.Peers, Volume: &Volume{Status: "Created", Options: map[string]string{}}},
			[]string{"set auth.allow 127.0.0.1,10.77.0.11,10.77.0.12,10.77.0.13 auth.ssl-allow a,b,c client.ssl on cluster.quorum-type auto cluster.server-quorum-type server network.ping-timeout 5 server.ssl on", "start"}},
		{"converged", tls(st(on(mA), on(mA), on(mB), on(mC))), volume("Started", "a,b,c"), nil},
		{"a coordinator that sees only itself keeps the others", tls(st(on(mA), on(mA))), volume("Started", "a,b,c"), nil},
		{"a newcomer is let in", tls(st(on(mA), on(mA), on(mB), on(mC), member.Member{ID: "d", Addr: mC.Addr.Next(), Alive: true, GlusterEpoch: member.FreshGluster, StorageTLS: true})),
			volume("Started", "a,b,c"), []string{"probe 10.77.0.14", "set auth.allow 127.0.0.1,10.77.0.11,10.77.0.12,10.77.0.13,10.77.0.14 auth.ssl-allow a,b,c,d"}},
		{"the departed is dropped", tls(st(on(mA), on(mA), on(mB), departed(on(mC)))), volume("Started", "a,b,c"),
			[]string{"set auth.allow 127.0.0.1,10.77.0.11,10.77.0.12 auth.ssl-allow a,b"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := kinds(Plan(c.s, c.obs)); got != strings.Join(c.want, "; ") {
				t.Errorf("Plan = %s\nwant  %s", got, strings.Join(c.want, "; "))
			}
		})
	}
}

// The coordinator is a member whose glusterd is in the pool: with the initialiser gone, a newcomer with the
// lowest id (fresh glusterd) does not coordinate while a pool member is alive; when every glusterd is fresh
// (first formation), the lowest id does.
func TestCoordinatorIsInThePool(t *testing.T) {
	inPool := func(m member.Member) member.Member { m.GlusterEpoch = "0"; return m }
	newcomer := member.Member{ID: "0-new", Addr: mC.Addr.Next(), Alive: true, GlusterEpoch: member.FreshGluster}
	gone := mA
	gone.Alive = false
	cases := []struct {
		name string
		s    *state.State
		want string
	}{
		{"initialiser alive", st(inPool(mB), inPool(mA), inPool(mB), newcomer), "a"},
		{"initialiser gone: the lowest pool member, not the newcomer", st(inPool(mB), gone, inPool(mB), inPool(mC), newcomer), "b"},
		{"a member not reported yet is not taken for a pool member", st(mB, gone, member.Member{ID: "b", Addr: mB.Addr, Alive: true}, inPool(mC), newcomer), "c"},
		{"first formation: all fresh, the lowest id", &state.State{Inputs: state.Inputs{Expected: 3}, Observed: state.Observed{Self: mB, Members: []member.Member{mA, mB, mC}}}, "a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := Coordinator(c.s)
			if !ok || got.ID != c.want {
				t.Errorf("Coordinator = %s (%v), want %s", got.ID, ok, c.want)
			}
		})
	}
}

// setFor is the options action of a fresh volume among members ms (without a storage CA): the create plans
// it, and the start, in the same round.
func setFor(ms ...member.Member) string {
	allow := "127.0.0.1"
	for _, m := range ms {
		allow += "," + m.Addr.String()
	}
	return "set auth.allow " + allow + " cluster.quorum-type auto cluster.server-quorum-type server network.ping-timeout 5"
}
