package formation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot"
	"github.com/kiln-project/kiln/firstboot/discovery"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/test/formation"
)

// forgerEnv makes the test binary the forger (TestMain) instead of running tests: a holder of the cluster key
// that joins the membership under an id of its own, in the lab's network namespace.
const forgerEnv = "KILN_TEST_FORGER"

// forgery is what the forger is told (JSON in forgerEnv).
type forgery struct {
	Cluster string     `json:"cluster"`
	Key     []byte     `json:"key"`
	Bind    netip.Addr `json:"bind"`
	Seeds   []string   `json:"seeds"`
	// Victim is the member whose id the forged record claims as its origin.
	Victim string `json:"victim"`
}

// forgedEpoch is the forged record's epoch: a recovery's, which, if taken up, would make every node leave its
// swarm and set its gluster state aside.
const forgedEpoch = 1000

func TestMain(m *testing.M) {
	if spec := os.Getenv(forgerEnv); spec != "" {
		if err := forge(spec); err != nil {
			fmt.Fprintln(os.Stderr, "forger:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// forge joins the membership with the cluster key and a node key of its own, waits to see every member and
// the victim's swarm, and sends every member a formation record of a new epoch that names the victim as its
// origin and initialiser, signed with its own node key (which is all a key holder has). Then it leaves.
func forge(spec string) error {
	var f forgery
	if err := json.Unmarshal([]byte(spec), &f); err != nil {
		return err
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := discovery.Start(ctx, discovery.Config{NodeID: "zz-forger", Hostname: "forger", ClusterName: f.Cluster,
		Key: f.Key, Expected: len(f.Seeds) + 1, Bind: f.Bind, Port: discovery.GossipPort, Peers: f.Seeds, NodeKey: key,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	defer d.Close()
	var swarmID string
	var targets []string
	for swarmID == "" || len(targets) < len(f.Seeds) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("members not all seen with the victim's swarm: %d of %d, swarm %q", len(targets), len(f.Seeds), swarmID)
		case <-time.After(time.Second):
		}
		targets = targets[:0]
		for _, p := range d.Peers() {
			if p.ID == f.Victim {
				swarmID = p.Meta.SwarmID
			}
			if p.Alive && p.ID != "zz-forger" {
				targets = append(targets, p.ID)
			}
		}
	}
	forged := state.Formation{SwarmID: swarmID, Initialiser: f.Victim, ManagerToken: "SWMTKN-1-forged",
		WorkerToken: "SWMTKN-1-forged", ManagerAddrs: []string{f.Bind.String() + ":2377"}, Managers: 1, Epoch: forgedEpoch}
	msg := firstboot.FormationMessage(forged, time.Now().UTC(), f.Victim, key)
	for _, id := range targets {
		if err := d.Send(id, msg); err != nil {
			return fmt.Errorf("send to %s: %w", id, err)
		}
	}
	fmt.Printf("forged epoch %d of swarm %s in the name of %s, sent to %s\n", forgedEpoch, swarmID, f.Victim, strings.Join(targets, ", "))
	time.Sleep(2 * time.Second) // reliable sends are queued; let them go before leaving
	return nil
}

// checkForgedRecordIgnored runs the forger in the lab's namespace against a formed cluster and wants every
// node to ignore the record (docs/security.md, "Node keys"): each logs that it is signed with another node's
// key, none persists the forged epoch, and every node stays ready.
func checkForgedRecordIgnored(ctx context.Context, t *testing.T, l *lab.Lab, nodes []*lab.Node, cluster string, key []byte, victim string) {
	t.Helper()
	const refusal = "signed with another node's key"
	count := func(n *lab.Node) int {
		out, _ := formation.Exec(ctx, n, "sh", "-c", "journalctl -u kiln-firstboot --no-pager -o cat | grep -c \""+refusal+"\" || true")
		var c int
		fmt.Sscan(strings.TrimSpace(out), &c)
		return c
	}
	addrs, err := formation.Addrs(nodes)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]int{}
	var seeds []string
	for _, n := range nodes {
		before[n.Name()] = count(n)
		seeds = append(seeds, netip.AddrPortFrom(addrs[n.Name()], discovery.GossipPort).String())
	}
	spec, err := json.Marshal(forgery{Cluster: cluster, Key: key, Bind: formation.HostAddr(), Seeds: seeds, Victim: victim})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.Namespace(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), forgerEnv+"="+string(spec))
	out, err := cmd.CombinedOutput()
	t.Logf("forger: %s", strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("forger: %v", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = formation.Poll(pctx, pollEvery, "every node refused the forged record", func(ctx context.Context) (bool, string, error) {
		var waiting []string
		for _, n := range nodes {
			if count(n) <= before[n.Name()] {
				waiting = append(waiting, n.Name())
			}
		}
		return len(waiting) == 0, "no refusal logged yet on " + strings.Join(waiting, ", "), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		rec, err := formation.Exec(ctx, n, "cat", "/var/lib/kiln/formation.json")
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Epoch  int    `json:"epoch"`
			Origin string `json:"origin"`
		}
		if err := json.Unmarshal([]byte(rec), &r); err != nil {
			t.Fatalf("%s: formation.json: %v", n.Name(), err)
		}
		if r.Epoch == forgedEpoch {
			t.Errorf("%s took up the forged record (epoch %d, origin %s)", n.Name(), r.Epoch, r.Origin)
		}
		st, err := formation.AgentStatus(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if !formation.Formed(st) {
			t.Errorf("%s after the forgery: phase %s", n.Name(), st.Phase)
		}
	}
}
