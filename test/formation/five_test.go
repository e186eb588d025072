package formation_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/labtest"
	"github.com/kiln-project/kiln/test/formation"
)

const (
	// fiveTimeout bounds TestFiveNodes: five TCG guests share two cores, so formation takes a few times
	// longer than three's.
	fiveTimeout = 80 * time.Minute
	// fiveFormTimeout bounds the five nodes' formation from lab up.
	fiveFormTimeout = 45 * time.Minute
	// lossHealTimeout bounds the wait for the survivors to serve again after a node loss: keepalived's
	// takeover, raft's election and gluster's ping timeout are seconds each, on loaded guests longer.
	lossHealTimeout = 10 * time.Minute
	// fivePollEvery spaces the formation's observations: each one starts `kiln-firstboot status` (a 20 MB Go
	// binary, a costly exec under TCG) in every guest, and five guests already need more than the two cores
	// give them while they form.
	fivePollEvery = 15 * time.Second
)

// TestFiveNodes is formation beyond three nodes (make e2e: KILN_E2E_LARGE=1): five fresh nodes form one swarm
// of five managers, the volume on three bricks and mounted on all five, one VIP holder. Then the VIP holder is
// powered off, and the four survivors still serve: exactly one of them takes the VIP, their swarm has a
// leader, and a file written to /var/data on one survivor reads back on another.
func TestFiveNodes(t *testing.T) {
	img := labtest.Image(t)
	if os.Getenv("KILN_E2E_LARGE") != "1" {
		t.Skip("set KILN_E2E_LARGE=1 (make e2e) to boot a five-node lab")
	}
	ctx, cancel := context.WithTimeout(context.Background(), fiveTimeout)
	defer cancel()
	cfgFile, _, err := formation.ClusterConfig("five", 5)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	l := upLab(ctx, t, img, labName("five"), 5, cfgFile)
	nodes, err := l.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(ctx, fiveFormTimeout)
	_, err = formation.WaitFormed(fctx, nodes, fivePollEvery)
	fcancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("five nodes formed %s after lab up", time.Since(start).Round(time.Second))
	assertOneCluster(ctx, t, nodes)
	for _, n := range nodes {
		must(t, ctx, n, "mountpoint", "-q", "/var/data")
	}

	holders, err := formation.VIPHolders(ctx, nodes, formation.VIP.Addr())
	if err != nil || len(holders) != 1 {
		t.Fatalf("VIP holders %v (%v), want one", holders, err)
	}
	var survivors []*lab.Node
	for _, n := range nodes {
		if n.Name() == holders[0] {
			if err := n.Kill(ctx); err != nil {
				t.Fatal(err)
			}
			continue
		}
		survivors = append(survivors, n)
	}
	lost := time.Now()
	hctx, hcancel := context.WithTimeout(ctx, lossHealTimeout)
	defer hcancel()
	err = formation.Poll(hctx, pollEvery, "the survivors serve", func(ctx context.Context) (bool, string, error) {
		hs, err := formation.VIPHolders(ctx, survivors, formation.VIP.Addr())
		if err != nil || len(hs) != 1 || slices.Contains(hs, holders[0]) {
			return false, fmt.Sprintf("VIP holders %v (%v)", hs, err), nil
		}
		if _, err := formation.SwarmNodes(ctx, survivors[0]); err != nil {
			return false, "swarm: " + err.Error(), nil
		}
		name := fmt.Sprintf("/var/data/five-loss-%d", time.Now().UnixNano())
		if _, err := formation.Exec(ctx, survivors[0], "sh", "-c", "echo survived > "+name); err != nil {
			return false, "write: " + err.Error(), nil
		}
		out, err := formation.Exec(ctx, survivors[len(survivors)-1], "cat", name)
		if err != nil || strings.TrimSpace(out) != "survived" {
			return false, fmt.Sprintf("read back %q: %v", out, err), nil
		}
		return true, "", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %s was powered off the four survivors served again within %s", holders[0], time.Since(lost).Round(time.Second))
}
