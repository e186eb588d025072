package swarm

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/firstboot/vrrp"
	"github.com/kiln-project/kiln/internal/run"
	"github.com/kiln-project/kiln/internal/testenv"
)

// daemon is a dockerd that a test can stop, wipe (reimage) and start again. It runs in its node's network
// namespace and in a UTS namespace of its own with the member's hostname, as on a real node: swarm node
// entries carry the hostname, which is how stale entries are matched to members.
type daemon struct {
	ns, dir, hostname string
	cmd               *exec.Cmd
	exited            chan struct{}
	cli               *client.Client
}

func (d *daemon) start(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(d.dir, "d.sock")
	logf, err := os.OpenFile(filepath.Join(d.dir, "dockerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("hostname %s && exec dockerd --data-root %s --exec-root %s -H unix://%s --pidfile %s --bridge=none --iptables=false --ip6tables=false",
		d.hostname, filepath.Join(d.dir, "data"), filepath.Join(d.dir, "x"), sock, filepath.Join(d.dir, "pid"))
	d.cmd = exec.Command("nsenter", "--net=/run/netns/"+d.ns, "unshare", "--uts", "sh", "-c", script)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); logf.Close(); close(done) }(d.cmd, d.exited)
	if d.cli == nil {
		if d.cli, err = client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation()); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := d.cli.Info(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-d.exited:
			t.Fatalf("dockerd %s exited during start-up; see %s", d.hostname, logf.Name())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd %s not answering after 60 s: %v", d.hostname, err)
		}
		time.Sleep(200 * time.Millisecond) // poll interval while waiting for the daemon socket
	}
}

// stop ends the daemon (nsenter, unshare and sh all exec, so the pid is dockerd's) and waits for it.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
	testenv.UnmountUnder(t, d.dir)
}

// reimage is an empty /var/lib/docker on the same machine: stop, wipe the data root, start.
func (d *daemon) reimage(t *testing.T) {
	t.Helper()
	d.stop(t)
	if err := os.RemoveAll(filepath.Join(d.dir, "data")); err != nil {
		t.Fatal(err)
	}
	d.start(t)
}

// newHealLAN is newLAN with restartable daemons that carry their members' hostnames.
func newHealLAN(t *testing.T, n int) ([]*daemon, []member.Member) {
	t.Helper()
	tag := strconv.Itoa(os.Getpid() % 100000)
	hub := "ksh-hub-" + tag
	sh(t, "ip", "netns", "add", hub)
	t.Cleanup(func() { run.Cmd(context.Background(), "ip", "netns", "del", hub) })
	sh(t, "ip", "-n", hub, "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", hub, "link", "set", "br0", "up")
	base, err := os.MkdirTemp("", "ksh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	var ds []*daemon
	var ms []member.Member
	for i := range n {
		ns := fmt.Sprintf("ksh-%s-%d", tag, i)
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { run.Cmd(context.Background(), "ip", "netns", "del", ns) })
		sh(t, "ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", fmt.Sprintf("p%d", i), "netns", hub)
		sh(t, "ip", "-n", hub, "link", "set", fmt.Sprintf("p%d", i), "master", "br0", "up")
		addr := fmt.Sprintf("10.99.8.%d", 11+i)
		sh(t, "ip", "-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
		id := string(rune('a' + i))
		d := &daemon{ns: ns, dir: filepath.Join(base, id), hostname: "kiln-" + id}
		d.start(t)
		t.Cleanup(func() {
			d.stop(t)
			if d.cli != nil {
				d.cli.Close()
			}
			if t.Failed() {
				if b, err := os.ReadFile(filepath.Join(d.dir, "dockerd.log")); err == nil {
					lines := strings.Split(strings.TrimSpace(string(b)), "\n")
					t.Logf("%s dockerd log tail:\n%s", d.hostname, strings.Join(lines[max(0, len(lines)-15):], "\n"))
				}
			}
		})
		ds = append(ds, d)
		m := member.Member{ID: id, Hostname: d.hostname, Alive: true}
		m.Addr = mustAddr(addr)
		ms = append(ms, m)
	}
	return ds, ms
}

// TestSelfHealingRealDockerd: a reimaged manager (same machine and hostname, empty data root) rejoins; the
// stale entry of its previous install is demoted and removed by the leader's reconciler, and the node ends a
// Ready manager again: 3 managers, no Down entries. Then a manager cut off from the other two loses quorum:
// its reconciler says so and the VRRP health check fails on it (so it gives the VIP up), while the majority
// side stays healthy; after the link is back everything is healthy again.
func TestSelfHealingRealDockerd(t *testing.T) {
	needDocker(t)
	ds, ms := newHealLAN(t, 3)
	recs := make([]*Reconciler, 3)
	for i, d := range ds {
		recs[i] = NewWithOptions(d.cli, quiet(), testOptions())
	}
	ctx := context.Background()
	var f *state.Formation
	// pass runs node i's reconciler with the members' gossiped swarm node IDs, and keeps the newest announce.
	pass := func(i int) (*state.State, error) {
		s := &state.State{Inputs: state.Inputs{Expected: 3, Initialiser: i == 0, Formation: f, ReplaceAfter: time.Hour}, Observed: state.Observed{Self: ms[i], Members: ms}}
		_, err := recs[i].Reconcile(ctx, s)
		if s.Swarm.Node != "" {
			ms[i].SwarmNode = s.Swarm.Node
		}
		if s.Swarm.Announce != nil {
			f = s.Swarm.Announce
		}
		return s, err
	}
	for i := range 3 {
		if _, err := pass(i); err != nil {
			t.Fatalf("form: node %d: %v", i, err)
		}
	}
	if _, err := pass(0); err != nil {
		t.Fatal(err)
	}
	if f == nil || f.Managers != 3 {
		t.Fatalf("formation after forming: %+v, want 3 managers", f)
	}
	oldC := ms[2].SwarmNode

	// Reimage C.
	ds[2].reimage(t)
	recs[2] = NewWithOptions(ds[2].cli, quiet(), testOptions())
	sc, err := pass(2)
	if err != nil {
		t.Fatalf("reimaged node's first pass: %v", err)
	}
	if ms[2].SwarmNode != member.NoSwarmNode || !strings.Contains(sc.Status["swarm"], "still counts") {
		t.Fatalf("reimaged node while its old entry holds the seat: swarm node %q, status %q; want it to wait, not in a swarm",
			ms[2].SwarmNode, sc.Status["swarm"])
	}

	// The leader's passes demote and remove the stale entry and publish a record without it; the reimaged
	// node then joins as a manager.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		for i := range 2 {
			if _, err := pass(i); err != nil {
				t.Logf("pass %d: %v", i, err)
			}
		}
		if _, err := pass(2); err != nil {
			t.Logf("pass 2: %v", err)
		}
		nodes, err := ds[0].cli.NodeList(ctx, swarm.NodeListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready, stale := 0, 0
		for _, n := range nodes {
			if n.ID == oldC {
				stale++
			}
			if n.Status.State == swarm.NodeStateReady && n.ManagerStatus != nil && n.ManagerStatus.Reachability == swarm.ReachabilityReachable {
				ready++
			}
		}
		if len(nodes) == 3 && ready == 3 && stale == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 3 min: %d nodes, %d ready managers, stale entry present: %v", len(nodes), ready, stale > 0)
		}
	}
	for i := range 3 {
		if s, err := pass(i); err != nil || !s.Swarm.Active {
			t.Fatalf("node %d after healing: active %v err %v", i, s.Swarm.Active, err)
		}
	}
	if f.Managers != 3 {
		t.Fatalf("formation after healing: %d managers, want 3", f.Managers)
	}

	// Quorum loss on the minority side: cut A off.
	sh(t, "ip", "-n", ds[0].ns, "link", "set", "eth0", "down")
	ms[0].Alive = true
	ms[1].Alive, ms[2].Alive = false, false // A's view
	waitHealth := func(d *daemon, want bool, within time.Duration) {
		t.Helper()
		end := time.Now().Add(within)
		for {
			hctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			err := vrrp.Healthy(hctx, d.cli)
			cancel()
			if (err == nil) == want {
				t.Logf("%s healthy=%v (%v)", d.hostname, want, err)
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s: health = %v after %s, want healthy=%v", d.hostname, err, within, want)
			}
			time.Sleep(500 * time.Millisecond) // keepalived runs the check every second
		}
	}
	waitHealth(ds[0], false, 60*time.Second)
	waitHealth(ds[1], true, 60*time.Second)
	if _, err := pass(0); err == nil || !strings.Contains(err.Error(), "no quorum: 2 of 3 managers unreachable") {
		t.Fatalf("minority manager's pass: err = %v, want no quorum report", err)
	}
	sh(t, "ip", "-n", ds[0].ns, "link", "set", "eth0", "up")
	ms[1].Alive, ms[2].Alive = true, true
	waitHealth(ds[0], true, 90*time.Second)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestRecoverRealDockerd: two of three managers are lost for good; the survivor reports no quorum, then
// ForceNewCluster (the swarm half of `kiln-firstboot recover --force-new-cluster`) makes it the cluster with
// no other entries, healthy again. Then both lost nodes return with their old state, together: they hold a
// majority of the old raft and elect a leader in it, under the same swarm ID (scenario 8 of
// docs/self-healing.md). Each must see the newer formation epoch, leave that fork and join the recovered swarm
// as a manager.
func TestRecoverRealDockerd(t *testing.T) {
	needDocker(t)
	ds, ms := newHealLAN(t, 3)
	recs := make([]*Reconciler, 3)
	for i, d := range ds {
		recs[i] = NewWithOptions(d.cli, quiet(), testOptions())
	}
	ctx := context.Background()
	var f *state.Formation
	local := make([]int, 3) // each node's LocalEpoch
	pass := func(i int) (*state.State, error) {
		s := &state.State{Inputs: state.Inputs{Expected: 3, Initialiser: i == 0, Formation: f, LocalEpoch: local[i], ReplaceAfter: time.Hour}, Observed: state.Observed{Self: ms[i], Members: ms}}
		_, err := recs[i].Reconcile(ctx, s)
		if s.Swarm.Node != "" {
			ms[i].SwarmNode = s.Swarm.Node
		}
		if s.Swarm.Announce != nil {
			f = s.Swarm.Announce
		}
		return s, err
	}
	for i := range 3 {
		if _, err := pass(i); err != nil {
			t.Fatalf("form: node %d: %v", i, err)
		}
	}
	oldC := ms[2].SwarmNode

	ds[1].stop(t)
	ds[2].stop(t)
	ms[1].Alive, ms[2].Alive = false, false
	err := func() error {
		end := time.Now().Add(90 * time.Second)
		for {
			_, err := pass(0)
			if err != nil && strings.Contains(err.Error(), "no quorum: 2 of 3 managers unreachable") {
				return nil
			}
			if time.Now().After(end) {
				return fmt.Errorf("survivor never reported the lost quorum; last: %v", err)
			}
		}
	}()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ForceNewCluster(ctx, ds[1].cli, ms[1].Addr, quiet()); err == nil {
		t.Fatal("ForceNewCluster on a stopped daemon: want an error")
	}
	listen, err := ForceNewCluster(ctx, ds[0].cli, ms[0].Addr, quiet())
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := ds[0].cli.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil || len(nodes) != 1 {
		t.Fatalf("after ForceNewCluster: %d nodes, %v; want only the survivor", len(nodes), err)
	}
	if err := vrrp.Healthy(ctx, ds[0].cli); err != nil {
		t.Fatalf("survivor after recovery: %v", err)
	}
	if _, err := ForceNewCluster(ctx, ds[0].cli, ms[0].Addr, quiet()); err == nil {
		t.Fatal("ForceNewCluster with quorum: want a refusal")
	}
	// The new epoch, as firstboot.NewEpoch writes it.
	rec := *f
	rec.Epoch, rec.ManagerAddrs, rec.Managers, rec.GlusterPeers, rec.Initialiser = 1, []string{listen}, 1, nil, ms[0].ID
	f = &rec
	local[0] = 1

	// B and C return with their pre-recovery state.
	oldB := ms[1].SwarmNode
	ds[1].start(t)
	ds[2].start(t)
	ms[1].Alive, ms[2].Alive = true, true
	// As on real nodes, where the agents' first passes come after boot: let the fork elect its leader first,
	// so B and C each list themselves Ready in it.
	forked := time.Now().Add(2 * time.Minute)
	for {
		// Right after the election swarmkit lists the returning managers Unknown until they open a
		// session with the new leader; agents whose first pass comes later see them Ready, so wait for that.
		if nodes, err := ds[1].cli.NodeList(ctx, swarm.NodeListOptions{}); err == nil && readyNode(nodes, oldB) && readyNode(nodes, oldC) {
			break
		}
		if time.Now().After(forked) {
			t.Fatal("the returning nodes never elected a leader in their old raft")
		}
		time.Sleep(time.Second)
	}
	deadline := time.Now().Add(4 * time.Minute)
	rejoined := map[int]bool{}
	for len(rejoined) < 2 {
		for _, i := range []int{1, 2} {
			s, err := pass(i)
			if err == nil && s.Swarm.Active && ms[i].SwarmNode != oldB && ms[i].SwarmNode != oldC {
				rejoined[i] = true
			} else if time.Now().After(deadline) {
				t.Fatalf("returning node %d did not rejoin the recovered swarm: %v (status %q)", i, err, s.Status["swarm"])
			}
		}
		if _, err := pass(0); err != nil {
			t.Logf("survivor: %v", err)
		}
	}
	nodes, err = ds[0].cli.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := 0
	for _, n := range nodes {
		if n.Status.State == swarm.NodeStateReady && n.ManagerStatus != nil {
			ready++
		}
	}
	if len(nodes) != 3 || ready != 3 {
		t.Fatalf("recovered swarm: %d nodes, %d ready managers; want 3 and 3", len(nodes), ready)
	}
	if f.Epoch != 1 || !slices.Contains(f.ManagerAddrs, listen) {
		t.Fatalf("formation record after the return: epoch %d, managers %v; want epoch 1 with the survivor %s", f.Epoch, f.ManagerAddrs, listen)
	}
}

// TestStillbornSeatRealDockerd: the second manager's machine loses its swarm state while the swarm has only
// two raft seats (a join given up after pendingMax, or a reimage): the initialiser is left without a leader.
// Once the seat has looked stillborn for stillbornGrace, the initialiser's reconciler forces a new cluster of
// itself (the same swarm, a leader again) and announces a record with its own seat, with which the machine
// joins again as a manager.
func TestStillbornSeatRealDockerd(t *testing.T) {
	needDocker(t)
	ds, ms := newHealLAN(t, 2)
	ctx := context.Background()
	clock := time.Now()
	ra := NewWithOptions(ds[0].cli, quiet(), testOptions())
	ra.now = func() time.Time { return clock }
	rb := NewWithOptions(ds[1].cli, quiet(), testOptions())
	pass := func(i int, f *state.Formation) *state.State {
		return &state.State{Inputs: state.Inputs{Expected: 3, Initialiser: i == 0, Formation: f}, Observed: state.Observed{Self: ms[i], Members: ms}}
	}
	sa := pass(0, nil)
	reconcile(t, ra, sa, true)
	f := sa.Swarm.Announce
	reconcile(t, rb, pass(1, f), true)
	if n := nodeByAddr(t, ds[0].cli, ms[1].Addr); n.ManagerStatus == nil {
		t.Fatalf("b did not join as a manager: %+v", n.Spec)
	}

	ds[1].reimage(t)
	ms[0].SwarmNode, ms[1].SwarmNode = sa.Swarm.Node, member.NoSwarmNode
	deadline := time.Now().Add(2 * time.Minute)
	for ra.stillbornSince.IsZero() {
		_, err := ra.Reconcile(ctx, pass(0, f))
		if time.Now().After(deadline) {
			t.Fatalf("a never found its swarm without a leader and the seat stillborn: last pass %v", err)
		}
		time.Sleep(time.Second) // raft's election timeout passes before the leader steps down
	}
	clock = clock.Add(stillbornGrace)
	s := pass(0, f)
	if changed, err := ra.Reconcile(ctx, s); err != nil || !changed || !strings.Contains(s.Pending["swarm"], "took the swarm over alone") {
		t.Fatalf("after stillbornGrace: changed %v, err %v, pending %q; want the take-over", changed, err, s.Pending["swarm"])
	}
	info, err := ds[0].cli.Info(ctx)
	if err != nil || info.Swarm.Cluster == nil || info.Swarm.Cluster.ID != f.SwarmID {
		t.Fatalf("after the take-over: %+v, %v; want the same swarm %s", info.Swarm.Cluster, err, f.SwarmID)
	}

	// The leader's passes announce its own seat only and remove the stale entry (Down, its machine in no swarm);
	// b joins again with that record.
	var f2 *state.Formation
	deadline = time.Now().Add(2 * time.Minute)
	for f2 == nil || len(f2.ManagerAddrs) != 1 {
		clock = clock.Add(reimageGrace)
		s := pass(0, f)
		if _, err := ra.Reconcile(ctx, s); err != nil && time.Now().After(deadline) {
			t.Fatalf("a after the take-over: %v", err)
		}
		f2 = s.Swarm.Announce
		if time.Now().After(deadline) {
			t.Fatalf("a announces %+v, want its own seat only", f2)
		}
	}
	sb := pass(1, f2)
	reconcile(t, rb, sb, true)
	// By node id: the stale entry may still be listed under the same address until the cleanup removes it.
	n, _, err := ds[0].cli.NodeInspectWithRaw(ctx, sb.Swarm.Node)
	if err != nil || n.ManagerStatus == nil || n.ManagerStatus.Reachability != swarm.ReachabilityReachable {
		t.Fatalf("b (%s) after joining again: %+v, %v; want a reachable manager", sb.Swarm.Node, n.ManagerStatus, err)
	}
}
