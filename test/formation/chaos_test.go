package formation_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/status"
	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/test/formation"
)

// chaosImage skips unless KILN_CHAOS=1 (and not -short).
func chaosImage(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no VMs")
	}
	if os.Getenv("KILN_CHAOS") != "1" {
		t.Skip("set KILN_CHAOS=1 for the formation chaos tests")
	}
	img, err := formation.ImagePath()
	if err != nil {
		t.Fatalf("KILN_CHAOS=1 but %v", err)
	}
	return img
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// assertOneCluster checks the formed cluster is one: every node in the same swarm (docker info cluster id: two
// ids fail at once), and then, within swarmSettle (a just-joined manager shows Ready a little after its agent
// reports formed), the swarm has exactly these nodes as ready managers, the volume 3 bricks online and one node
// the VIP. It returns the swarm cluster id.
func assertOneCluster(ctx context.Context, t *testing.T, nodes []*lab.Node) string {
	t.Helper()
	// Beyond three nodes the guests outgrow the two cores: with five, one round of `docker info` on each took
	// more than swarmSettle on its own (each guest idles at ~40 % of a host core once formed).
	sctx, cancel := context.WithTimeout(ctx, swarmSettle+time.Duration(max(0, len(nodes)-3))*4*time.Minute)
	defer cancel()
	// A manager reports no cluster id while raft has no leader (an election right after formation on loaded
	// guests, say): that is a moment to wait out, not a second swarm. A second swarm has a
	// leader and an id of its own, and two ids fail at once.
	var ids map[string][]string
	err := formation.Poll(sctx, pollEvery, "every node reports its swarm's id", func(ctx context.Context) (bool, string, error) {
		ids = map[string][]string{}
		for _, n := range nodes {
			state, id, err := formation.SwarmInfo(ctx, n)
			if err != nil {
				return false, err.Error(), nil
			}
			if state != "active" || id == "" {
				return false, fmt.Sprintf("%s: swarm %q cluster %q", n.Name(), state, id), nil
			}
			ids[id] = append(ids[id], n.Name())
			if len(ids) > 1 {
				return false, "", fmt.Errorf("%d swarms, want exactly one: %v", len(ids), ids)
			}
		}
		return true, "", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = formation.Poll(sctx, pollEvery, "one settled cluster", func(ctx context.Context) (bool, string, error) {
		sn, err := formation.SwarmNodes(ctx, nodes[0])
		if err != nil {
			return false, err.Error(), nil
		}
		ready := 0
		for _, s := range sn {
			if s.ReadyManager() {
				ready++
			}
		}
		if len(sn) != len(nodes) || ready != len(nodes) {
			return false, fmt.Sprintf("docker node ls: %+v, want %d ready managers and nothing else", sn, len(nodes)), nil
		}
		res, err := nodes[0].Exec(ctx, "gluster", "volume", "status", "data", "--xml")
		if err != nil {
			return false, err.Error(), nil
		}
		bs, err := formation.ParseVolumeStatusXML(res.Stdout)
		if err != nil {
			return false, err.Error(), nil
		}
		online := 0
		for _, b := range bs {
			if b.Online {
				online++
			}
		}
		if len(bs) != 3 || online != 3 {
			return false, fmt.Sprintf("volume data bricks %+v, want 3 online", bs), nil
		}
		hs, err := formation.VIPHolders(ctx, nodes, formation.VIP.Addr())
		if err != nil {
			return false, err.Error(), nil
		}
		return len(hs) == 1, fmt.Sprintf("VIP holders %v, want exactly one", hs), nil
	})
	if err != nil {
		t.Error(err)
	}
	for id := range ids {
		return id
	}
	return ""
}

// TestChaosColdStarts cold-starts three fresh nodes at once, KILN_CHAOS_ROUNDS times (default 10), each time with
// a new cluster key: every round must end in exactly one swarm. Two initialisers, or a node that joins nothing,
// would show as two cluster ids or a missing one.
func TestChaosColdStarts(t *testing.T) {
	img := chaosImage(t)
	rounds := envInt(t, "KILN_CHAOS_ROUNDS", 10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rounds)*(formTimeout+5*time.Minute))
	defer cancel()
	var took []time.Duration
	for r := 1; r <= rounds; r++ {
		t.Run(fmt.Sprintf("round%02d", r), func(t *testing.T) {
			cfg, _, err := formation.ClusterConfig(fmt.Sprintf("chaos%d", r), 3)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			l := upLab(ctx, t, img, labName(fmt.Sprintf("cs%d-", r)), 3, cfg)
			nodes, err := l.Nodes()
			if err != nil {
				t.Fatal(err)
			}
			fctx, fcancel := context.WithTimeout(ctx, formTimeout)
			defer fcancel()
			if _, err := formation.WaitFormed(fctx, nodes, pollEvery); err != nil {
				t.Fatal(err)
			}
			d := time.Since(start)
			took = append(took, d)
			id := assertOneCluster(ctx, t, nodes)
			t.Logf("round %d: formed %s after lab up, swarm %s", r, d.Round(time.Second), id)
		})
	}
	t.Logf("formation times over %d rounds: %v", len(took), took)
}

// TestChaosAgentKill kills the agent (SIGKILL, systemd restarts it) on random nodes at random moments while the
// cluster forms, KILN_CHAOS_KILLS times at most (default 6), and requires it to converge to one cluster anyway.
// KILN_CHAOS_SEED replays a run.
func TestChaosAgentKill(t *testing.T) {
	img := chaosImage(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KILN_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KILN_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("KILN_CHAOS_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x6b696c6e))
	maxKills := envInt(t, "KILN_CHAOS_KILLS", 6)

	ctx, cancel := context.WithTimeout(context.Background(), formTimeout+20*time.Minute)
	defer cancel()
	cfg, _, err := formation.ClusterConfig("killer", 3)
	if err != nil {
		t.Fatal(err)
	}
	l := upLab(ctx, t, img, labName("kill"), 3, cfg)
	nodes, err := l.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithTimeout(ctx, formTimeout)
	defer bcancel()
	if _, err := l.WaitBooted(bctx); err != nil {
		t.Fatal(err)
	}

	// Kill at random moments (0–20 s apart) until every node is formed or the budget is spent. The phase each
	// victim reported just before is logged: it shows which parts of formation the run interrupted.
	kills := map[string]int{}
	var phases []string
	for landed := 0; landed < maxKills; {
		sts, _ := formation.Statuses(bctx, nodes)
		all := true
		for _, n := range nodes {
			all = all && formation.Formed(sts[n.Name()])
		}
		if all {
			break
		}
		victim := nodes[rng.IntN(len(nodes))]
		phase := status.Phase("unknown")
		if s := sts[victim.Name()]; s != nil {
			phase = s.Phase
		}
		// Only a kill that hit a running agent counts: `systemctl kill` also exits 0 for a unit that has not
		// started yet (waiting for dockerd), which would count as a kill that never happened.
		res, err := victim.Exec(bctx, "sh", "-c",
			`pid=$(systemctl show -p MainPID --value kiln-firstboot); [ "$pid" -gt 0 ] && kill -KILL "$pid"`)
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode == 0 {
			landed++
			kills[victim.Name()]++
			phases = append(phases, fmt.Sprintf("%s@%s", victim.Name(), phase))
		} else {
			// Before the agent's first start, and between a kill and systemd's restart (RestartSec), there is
			// no process to kill.
			t.Logf("kill on %s (%s) found no process: %s", victim.Name(), phase, strings.TrimSpace(res.Stderr))
		}
		select {
		case <-bctx.Done():
			t.Fatalf("kill loop: %v", bctx.Err())
		case <-time.After(time.Duration(rng.Int64N(int64(20 * time.Second)))):
		}
	}
	t.Logf("killed the agent %d times: %s", len(phases), strings.Join(phases, " "))

	if _, err := formation.WaitFormed(bctx, nodes, pollEvery); err != nil {
		t.Fatal(err)
	}
	id := assertOneCluster(ctx, t, nodes)
	// systemd counted a restart for every kill that landed: the kills were real.
	for _, n := range nodes {
		out, err := formation.Exec(ctx, n, "systemctl", "show", "-p", "NRestarts", "--value", "kiln-firstboot")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := strconv.Atoi(out); err != nil || got < kills[n.Name()] {
			t.Errorf("%s: NRestarts %q, want ≥ %d kills", n.Name(), out, kills[n.Name()])
		}
	}
	t.Logf("converged to swarm %s after kills %v", id, kills)
	if len(phases) == 0 {
		t.Error("no kill landed before formation finished: the run interrupted nothing")
	}
}
