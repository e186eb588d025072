package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dockerswarm "github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/kiln-project/kiln/firstboot"
	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/firstboot/gluster"
	"github.com/kiln-project/kiln/firstboot/host"
	"github.com/kiln-project/kiln/firstboot/statefs"
	"github.com/kiln-project/kiln/firstboot/status"
	"github.com/kiln-project/kiln/firstboot/swarm"
	"github.com/kiln-project/kiln/internal/files"
)

// The test binary is also the agent of every bench node: started with agentEnv set, it runs the agent
// instead of the tests.
const (
	agentEnv  = "KILN_BENCH_AGENT"
	configEnv = "KILN_BENCH_CONFIG"
	logDirEnv = "KILN_BENCH_LOGDIR"
	// keepLogsEnv names a directory that receives every node's logs when its LAN is torn down.
	keepLogsEnv = "KILN_BENCH_KEEPLOGS"
	// debugEnv set to anything logs the agents at debug level: every reconciler's time in every pass.
	debugEnv = "KILN_BENCH_DEBUG"
)

func TestMain(m *testing.M) {
	if id := os.Getenv(agentEnv); id != "" {
		os.Exit(agentMain(id, os.Getenv(configEnv), os.Getenv(logDirEnv)))
	}
	os.Exit(m.Run())
}

// agentMain is `kiln-firstboot run` inside a bench node, with two differences: config and identity are
// given (no fw_cfg, ESP or machine-id here), and glusterd, keepalived and the volume mount are units this
// process manages itself, since the node has no systemd.
func agentMain(id, cfgPath, logDir string) int {
	level := slog.LevelInfo
	if os.Getenv(debugEnv) != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		log.Error("config", "err", err)
		return 1
	}
	cfg, err := config.Parse(b)
	if err != nil {
		log.Error("config", "err", err)
		return 1
	}
	docker, err := host.DockerClient()
	if err != nil {
		log.Error("docker", "err", err)
		return 1
	}
	defer docker.Close()
	u := newUnits(logDir)
	defer u.stopAll(context.Background())
	err = host.Run(ctx, host.Machine{Docker: docker, Units: u}, firstboot.Options{
		Logger:     log,
		LoadConfig: func(context.Context) (*config.Config, error) { return cfg, nil },
		Identity:   func() (string, string, error) { return id, "kiln-" + id, nil },
	})
	if err != nil {
		log.Error("agent", "err", err)
		return 1
	}
	return 0
}

// needHost skips unless both real-daemon test sets were asked for; once asked for, a host that cannot run
// them fails.
func needHost(tb testing.TB) {
	tb.Helper()
	if os.Getenv("KILN_DOCKER_TESTS") != "1" || os.Getenv("KILN_GLUSTER_TESTS") != "1" {
		tb.Skip("set KILN_DOCKER_TESTS=1 KILN_GLUSTER_TESTS=1 to run whole agents against real dockerd, glusterd and keepalived")
	}
	if os.Geteuid() != 0 {
		tb.Fatal("whole-agent formation needs root (network and mount namespaces)")
	}
	for _, tool := range []string{"dockerd", "glusterd", "gluster", "keepalived", "nft", "nsenter", "unshare", "ip", "mountpoint"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Fatalf("whole-agent formation needs %s: %v (make deps installs it)", tool, err)
		}
	}
}

// formation is one measured formation: when each agent started and reached ready.
type formation struct {
	nodes     []*node
	lastStart time.Time
	ready     map[string]time.Duration // since lastStart
	formed    time.Duration            // all ready, one VIP holder; since lastStart
	holder    string
}

// form starts n agents at once on a fresh LAN (dockerd and glusterd already answering on each node, as when the
// image's agent starts) and waits until every agent reports ready and exactly one node holds the VIP. The nodes
// at the indices in inRAM boot as a netbooted node without a disk does: the initramfs's marker says /var is in
// RAM.
func form(tb testing.TB, n int, bound time.Duration, inRAM ...int) formation {
	tb.Helper()
	nodes := newLAN(tb, n)
	for _, i := range inRAM {
		if err := os.WriteFile(nodes[i].path(statefs.Marker), []byte(statefs.DefaultReason+"\n"), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	for _, nd := range nodes {
		nd.startDockerd(tb)
		nd.startGlusterd(tb)
	}
	c, err := config.New("bench")
	if err != nil {
		tb.Fatal(err)
	}
	c.Cluster.Size = n
	c.Cluster.Interface = "eth0"
	c.Cluster.VIP = netip.PrefixFrom(netip.MustParseAddr("10.99.8.100"), subnet.Bits())
	b, err := c.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	cfgPath := filepath.Join(filepath.Dir(nodes[0].dir), "cluster.yaml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	for _, nd := range nodes {
		nd.startAgent(tb, cfgPath)
	}
	f := formation{nodes: nodes, lastStart: nodes[len(nodes)-1].started, ready: map[string]time.Duration{}}
	deadline := f.lastStart.Add(bound)
	for {
		var holders []string
		sts := map[string]*status.Status{}
		for _, nd := range nodes {
			st := nd.status()
			sts[nd.id] = st
			if st == nil || st.Phase != status.PhaseReady {
				continue
			}
			if _, ok := f.ready[nd.id]; !ok {
				f.ready[nd.id] = time.Since(f.lastStart)
			}
			if st.VIPHolder != "" {
				holders = append(holders, st.VIPHolder)
			}
		}
		if len(f.ready) == n && len(holders) == n && allEqual(holders) && !strings.Contains(holders[0], ",") {
			f.formed, f.holder = time.Since(f.lastStart), holders[0]
			return f
		}
		for _, nd := range nodes {
			select {
			case <-nd.agentExited:
				tb.Fatalf("agent %s exited:\n%s", nd.id, files.Tail(filepath.Join(nd.dir, "log", "agent.log"), 30))
			default:
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, nd := range nodes {
				st := sts[nd.id]
				if st == nil {
					fmt.Fprintf(&b, "%s: no status\n", nd.id)
					continue
				}
				fmt.Fprintf(&b, "%s: %s vip=%q reconcilers=%v err=%s\n", nd.id, st.Phase, st.VIPHolder, st.Reconcilers, st.LastError)
			}
			tb.Fatalf("not formed %s after the last agent start:\n%s", bound, b.String())
		}
		time.Sleep(50 * time.Millisecond) // poll interval: the figure's resolution
	}
}

func allEqual(s []string) bool {
	for _, v := range s {
		if v != s[0] {
			return false
		}
	}
	return true
}

// TestWholeAgentFormation: complete agents, started at once with nothing but a shared cluster config, form
// a swarm where every node up to the seats is a ready manager, a volume of min(3, n) bricks mounted on every
// node, and one VIP holder. Three nodes, and five: two more managers, and two nodes that mount the volume
// without a brick.
func TestWholeAgentFormation(t *testing.T) {
	needHost(t)
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d_nodes", n), func(t *testing.T) {
			f := form(t, n, 3*time.Minute)
			t.Logf("formed %s after the last agent start (ready: %v), VIP on %s", f.formed.Round(10*time.Millisecond), f.ready, f.holder)
			checkFormed(t, f.nodes)
		})
	}
}

// TestWholeAgentFormationVarInRAM: four complete agents, the lowest id (n1) with /var in RAM, as a netbooted
// node without a disk. n1 neither votes nor initialises (the lowest voter, n2, does), joins the swarm, holds no
// brick and says so, and mounts the replica-3 volume whose bricks are on the three other nodes.
func TestWholeAgentFormationVarInRAM(t *testing.T) {
	needHost(t)
	f := form(t, 4, 5*time.Minute, 0)
	t.Logf("formed %s after the last agent start (ready: %v), VIP on %s", f.formed.Round(10*time.Millisecond), f.ready, f.holder)
	vol := checkFormed(t, f.nodes)
	for _, b := range vol.Bricks {
		if strings.HasPrefix(b, f.nodes[0].addr.String()+":") {
			t.Errorf("brick %s on n1, whose /var is in RAM (bricks %v)", b, vol.Bricks)
		}
	}
	st := f.nodes[0].status()
	want := statefs.NoBrickLine(statefs.DefaultReason)
	if st.NoBrick != want || !strings.HasSuffix(st.Reconcilers["gluster"], "/var/data mounted; "+want) {
		t.Errorf("n1 status: noBrick %q, gluster %q; want both to say %q", st.NoBrick, st.Reconcilers["gluster"], want)
	}
	for _, m := range f.nodes[1].status().Members {
		if m.NoBrick != (m.ID == "n1") || m.StateInRAM != (m.ID == "n1") {
			t.Errorf("n2 sees member %s with NoBrick=%v StateInRAM=%v", m.ID, m.NoBrick, m.StateInRAM)
		}
	}
	b, err := os.ReadFile(f.nodes[0].path("/var/lib/kiln/formation.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct{ Initialiser string }
	if err := json.Unmarshal(b, &rec); err != nil || rec.Initialiser != "n2" {
		t.Errorf("formation record initialiser %q (%v), want n2: n1 does not vote", rec.Initialiser, err)
	}
}

// checkFormed asks the cluster itself what form reads from the agents' status: the swarm's node list, the
// volume, the mounts. It returns the volume.
func checkFormed(t *testing.T, nodes []*node) *gluster.Volume {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+nodes[0].path("/run/docker.sock")), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	list, err := cli.NodeList(ctx, dockerswarm.NodeListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	managers := 0
	for _, nd := range list {
		if nd.Status.State == dockerswarm.NodeStateReady && nd.ManagerStatus != nil && nd.ManagerStatus.Reachability == dockerswarm.ReachabilityReachable {
			managers++
		}
	}
	if want := swarm.Seats(len(nodes)); len(list) != len(nodes) || managers != want {
		t.Errorf("swarm: %d nodes, %d ready reachable managers; want %d nodes, %d managers", len(list), managers, len(nodes), want)
	}
	g := gluster.NewCLI(func(ctx context.Context, args ...string) ([]byte, error) {
		return nodes[0].commandContext(ctx, "gluster", append([]string{"--mode=script"}, args...)...).Output()
	})
	vol, err := g.VolumeInfo(ctx, gluster.VolumeName)
	if err != nil || vol == nil {
		t.Fatalf("volume info: %v, %v", vol, err)
	}
	if want := min(3, len(nodes)); vol.Status != "Started" || vol.Replica != want || len(vol.Bricks) != want {
		t.Errorf("volume %s: %s, replica %d, bricks %v; want Started, replica %d", vol.Name, vol.Status, vol.Replica, vol.Bricks, want)
	}
	for _, nd := range nodes {
		if err := nd.commandContext(ctx, "mountpoint", "-q", gluster.MountPoint).Run(); err != nil {
			t.Errorf("node %s: %s not mounted: %v", nd.id, gluster.MountPoint, err)
		}
	}
	return vol
}

// BenchmarkWholeAgentFormation reports formed-after-the-third-agent-start (s/formed) for three agents on a
// fresh LAN per iteration (make bench-form-native; target ≤ 10 s).
func BenchmarkWholeAgentFormation(b *testing.B) {
	needHost(b)
	var total time.Duration
	for range b.N {
		f := form(b, 3, 3*time.Minute)
		total += f.formed
		b.Logf("formed %s after the third agent start (ready: %v)", f.formed.Round(10*time.Millisecond), f.ready)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/formed")
}
