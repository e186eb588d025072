package gluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/run"
)

// stepClock sums how long each gluster command took, keyed by its first two words ("volume start").
type stepClock struct {
	mu    sync.Mutex
	took  map[string]time.Duration
	count map[string]int
}

func (c *stepClock) add(step string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.took == nil {
		c.took, c.count = map[string]time.Duration{}, map[string]int{}
	}
	c.took[step] += d
	c.count[step]++
}

// runner times every command r runs.
func (c *stepClock) runner(r Runner) Runner {
	return func(ctx context.Context, args ...string) ([]byte, error) {
		start := time.Now()
		out, err := r(ctx, args...)
		var words []string
		for _, a := range args {
			if !strings.HasPrefix(a, "--") && len(words) < 2 {
				words = append(words, a)
			}
		}
		c.add(strings.Join(words, " "), time.Since(start))
		return out, err
	}
}

// timedSystemd times the mount unit's start (the FUSE client fetching the volfile and connecting to the bricks).
type timedSystemd struct {
	nodeSystemd
	clock *stepClock
}

func (s timedSystemd) Start(ctx context.Context, unit string) error {
	start := time.Now()
	err := s.nodeSystemd.Start(ctx, unit)
	if unit == MountUnit {
		s.clock.add("mount", time.Since(start))
	}
	return err
}

// formConcurrently drives three fresh glusterds to a formed volume the way three agents do: each node's own
// reconciler, all at the same time, sharing what gossip would carry (the members' glusterd epochs, the pool map
// the coordinator announces). The swarm is taken as formed (State.Swarm.Active), which is where an agent starts
// storage. Node 0 is the coordinator (lowest id, the formation's initialiser); clock, if not nil, times its
// gluster commands and its mount. It returns when each node mounted /var/data, measured from the start.
//
// Passes repeat 0.5 s apart: an agent's loop runs every 5 s while not settled, but every gossiped metadata
// change (a member reporting its glusterd epoch, its phase) wakes it at once, and during formation those come
// several times a second.
func formConcurrently(tb testing.TB, ns []*gnode, clock *stepClock, ca *glustertls.CA) []time.Duration {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	recs := make([]*Reconciler, 3)
	for i, n := range ns {
		runner := Runner(n.runner)
		if i == 0 && clock != nil {
			recs[i] = New(NewCLI(clock.runner(runner)), timedSystemd{nodeSystemd{tb, n}, clock}, n.dir, log.With("node", n.m.ID))
			continue
		}
		recs[i] = New(NewCLI(runner), nodeSystemd{tb, n}, n.dir, log.With("node", n.m.ID))
	}
	ms := []member.Member{ns[0].m, ns[1].m, ns[2].m}
	f := &state.Formation{Initialiser: ns[0].m.ID, StorageCA: ca}
	var mu sync.Mutex // guards ms and f: what gossip carries between the agents
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	start := time.Now()
	mountedAt := make([]time.Duration, 3)
	lastStatus := make([]string, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				fc := *f
				s := &state.State{Inputs: state.Inputs{Expected: 3, Formation: &fc, ReplaceAfter: time.Hour}, Observed: state.Observed{Self: ms[i], Members: slices.Clone(ms)}, Swarm: state.SwarmOutput{Active: true}}
				mu.Unlock()
				_, err := recs[i].Reconcile(ctx, s)
				mu.Lock()
				gossip(ms, i, s)
				if i == 0 && s.Gluster.PoolUUIDs != nil {
					f.GlusterPeers = s.Gluster.PoolUUIDs
				}
				mu.Unlock()
				lastStatus[i] = fmt.Sprintf("%s (err %v)", s.Status["gluster"], err)
				if err == nil && len(s.Pending) == 0 {
					if st, _ := (nodeSystemd{tb, ns[i]}).ActiveState(ctx, MountUnit); st == "active" {
						mountedAt[i] = time.Since(start)
						return
					}
				}
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		})
	}
	wg.Wait()
	for i, at := range mountedAt {
		if at == 0 {
			tb.Fatalf("node %s not formed within 5 min: %s", ms[i].ID, lastStatus[i])
		}
	}
	return mountedAt
}

// checkFormed: the volume is real (a file written through one node's mount is read through another's), and
// the cluster options the coordinator set reached every glusterd.
func checkFormed(tb testing.TB, ns []*gnode) {
	tb.Helper()
	ctx := context.Background()
	want := "formed\n"
	if _, err := run.Cmd(ctx, "nsenter", "-t", strconv.Itoa(ns[0].pid), "-m", "sh", "-c",
		"echo formed > "+filepath.Join(ns[0].dir, "mnt", "check")); err != nil {
		tb.Fatal(err)
	}
	got, err := run.Cmd(ctx, "nsenter", "-t", strconv.Itoa(ns[2].pid), "-m", "cat", filepath.Join(ns[2].dir, "mnt", "check"))
	if err != nil || string(got) != want {
		tb.Fatalf("read on %s: %q, %v; want %q", ns[2].m.ID, got, err, want)
	}
	for _, n := range ns {
		for k, v := range ClusterOptions {
			out, err := n.run(ctx, "--mode=script", "volume", "get", "all", k)
			if err != nil || !slices.Contains(strings.Fields(string(out)), v) {
				tb.Errorf("%s: volume get all %s: %q %v, want %s", n.m.ID, k, out, err, v)
			}
		}
	}
}

// TestFormationRealGlusterd: three fresh glusterds, three concurrent reconcilers, one replica-3 volume mounted
// on every node, in plaintext, as a cluster formed before storage TLS keeps running (TestStorageTLSRealGlusterd
// forms with TLS). The coordinator sets the cluster options before its first probe, while its pool is itself
// alone; the probed peers must have received them.
func TestFormationRealGlusterd(t *testing.T) {
	needGlusterd(t)
	ns := newGlusterLAN(t, false)
	formConcurrently(t, ns, nil, nil)
	checkFormed(t, ns)
	vol, err := NewCLI(ns[1].runner).VolumeInfo(context.Background(), VolumeName)
	if err != nil || vol == nil || vol.Status != "Started" || len(vol.Bricks) != 3 || vol.Options["network.ping-timeout"] != "5" {
		t.Fatalf("volume as node %s sees it: %+v %v", ns[1].m.ID, vol, err)
	}
}

// BenchmarkFormationRealGlusterd is storage formation at native speed (formConcurrently). It reports the
// total and the coordinator's gluster commands, the same steps docs/measurements.md times in TCG guests, so the
// two can be compared step by step. One formation per run (make bench-form-native: -benchtime 1x -count N):
// each needs fresh glusterds.
func BenchmarkFormationRealGlusterd(b *testing.B) {
	needGlusterd(b)
	if b.N > 1 {
		b.Fatalf("b.N = %d: run with -benchtime 1x (each formation needs fresh glusterds)", b.N)
	}
	b.StopTimer()
	ns := newGlusterLAN(b, true)
	clock := &stepClock{}
	b.StartTimer()
	mountedAt := formConcurrently(b, ns, clock, newCA(b))
	b.StopTimer()
	checkFormed(b, ns)

	for _, step := range slices.Sorted(maps.Keys(clock.took)) {
		b.Logf("coordinator: %-14s %2d× %6.3f s", step, clock.count[step], clock.took[step].Seconds())
	}
	b.ReportMetric(slices.Max(mountedAt).Seconds(), "formed-s")
	for step, unit := range map[string]string{
		"peer probe": "probe-s", "volume create": "create-s", "volume set": "set-s", "volume start": "start-s", "mount": "mount-s",
	} {
		b.ReportMetric(clock.took[step].Seconds(), unit)
	}
	// Observing (peer status, volume info) before every plan: the CLI's own cost, paid many times a pass.
	b.ReportMetric((clock.took["peer status"] + clock.took["volume info"]).Seconds(), "observe-s")
}
