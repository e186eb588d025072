package gluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/gluster/glusterd"
	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/run"
	"github.com/kiln-project/kiln/internal/testenv"
)

// gnode is one real glusterd in a network namespace and a mount namespace of its own, where its working
// directory, run and log directories and the brick parent (/var/lib/kiln/bricks, a tmpfs: trusted xattrs,
// and not the root filesystem, which glusterd refuses for bricks) are bind-mounted from dir. So dir is the
// reconciler's root: the paths it writes are the ones glusterd reads.
type gnode struct {
	m      member.Member
	ns     string
	dir    string
	pid    int
	exited chan struct{}
}

// needGlusterd skips unless KILN_GLUSTER_TESTS=1; once asked for, a host without glusterd or root fails the
// test instead of hiding it behind a skip.
func needGlusterd(t testing.TB) {
	t.Helper()
	if os.Getenv("KILN_GLUSTER_TESTS") != "1" {
		t.Skip("set KILN_GLUSTER_TESTS=1 to run gluster tests against real glusterds (needs root, glusterfs-server, unshare, nsenter)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("KILN_GLUSTER_TESTS=1 asks for these tests, and they need root")
	}
	for _, tool := range []string{"glusterd", "gluster", "unshare", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("KILN_GLUSTER_TESTS=1 asks for these tests, and they need %s: %v (make deps installs it)", tool, err)
		}
	}
}

func gsh(t testing.TB, name string, args ...string) {
	t.Helper()
	if _, err := run.Cmd(context.Background(), name, args...); err != nil {
		t.Fatal(err)
	}
}

func (n *gnode) start(t testing.TB) {
	t.Helper()
	script := fmt.Sprintf(`set -e
mount --make-rprivate /
# glusterd's CLI socket is /var/run/glusterd.socket: each node needs a /run of its own.
mount -t tmpfs kglrun /run
mkdir -p /run/gluster /var/lib/kiln/bricks /var/lib/kiln/tls /var/log/glusterfs
mount --bind %[1]s/var/lib/glusterd /var/lib/glusterd
mount --bind %[1]s/run/gluster /run/gluster
mount --bind %[1]s/log /var/log/glusterfs
mount --bind %[1]s/var/lib/kiln/bricks /var/lib/kiln/bricks
mount --bind %[1]s/var/lib/kiln/tls /var/lib/kiln/tls
%[2]s%[3]sexec glusterd -N --log-level=INFO
`, n.dir, testenv.GlusterTLSLinks, testenv.GlusterWithoutGeoRep)
	for _, d := range []string{"var/lib/glusterd", "var/lib/kiln/tls", "run/gluster", "log", "mnt"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.OpenFile(filepath.Join(n.dir, "glusterd.out"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// ip netns exec, unshare and sh all exec: the pid is glusterd's.
	cmd := exec.Command("ip", "netns", "exec", n.ns, "unshare", "--mount", "sh", "-c", script)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.pid = cmd.Process.Pid
	n.exited = make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); logf.Close(); close(done) }(n.exited)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := n.run(ctx, "pool", "list")
		cancel()
		if err == nil {
			return
		}
		select {
		case <-n.exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("glusterd %s exited during start-up: %s", n.m.ID, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("glusterd %s not answering after 30 s: %v", n.m.ID, err)
		}
		time.Sleep(200 * time.Millisecond) // poll interval while glusterd starts
	}
}

// stop ends every process in the node's network namespace (glusterd, bricks, self-heal daemon, fuse
// client): all started by this test, as descendants of glusterd or of the mount.
func (n *gnode) stop(t testing.TB) {
	t.Helper()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		out, _ := run.Cmd(context.Background(), "ip", "netns", "pids", n.ns)
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				syscall.Kill(pid, sig)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			out, _ := run.Cmd(context.Background(), "ip", "netns", "pids", n.ns)
			if strings.TrimSpace(string(out)) == "" {
				break
			}
			time.Sleep(100 * time.Millisecond) // poll interval while processes exit
		}
	}
	if n.exited != nil {
		<-n.exited
	}
	n.pid = 0
}

// run is the gluster CLI inside the node's namespaces.
func (n *gnode) run(ctx context.Context, args ...string) ([]byte, error) {
	if n.pid == 0 {
		return nil, fmt.Errorf("glusterd %s not running", n.m.ID)
	}
	return run.Cmd(ctx, "nsenter", append([]string{"-t", strconv.Itoa(n.pid), "-n", "-m", "gluster"}, args...)...)
}

func (n *gnode) runner(ctx context.Context, args ...string) ([]byte, error) {
	return n.run(ctx, append([]string{"--mode=script"}, args...)...)
}

// nodeSystemd plays systemd for one node: glusterd.service stops and starts the node's glusterd; the mount
// unit mounts the volume with the FUSE client inside the node's namespaces at <dir>/mnt.
type nodeSystemd struct {
	t testing.TB
	n *gnode
}

func (s nodeSystemd) DaemonReload(context.Context) error { return nil }
func (s nodeSystemd) ReloadOrRestart(context.Context, string) error {
	return nil
}
func (s nodeSystemd) Start(ctx context.Context, unit string) error {
	switch unit {
	case "glusterd.service":
		s.n.start(s.t)
		return nil
	case MountUnit:
		_, err := run.Cmd(ctx, "nsenter", "-t", strconv.Itoa(s.n.pid), "-n", "-m", "mount", "-t", "glusterfs",
			s.n.m.Addr.String()+":/"+VolumeName, filepath.Join(s.n.dir, "mnt"))
		return err
	}
	return fmt.Errorf("fake systemd: start %s", unit)
}
func (s nodeSystemd) Stop(_ context.Context, unit string) error {
	if unit != "glusterd.service" {
		return fmt.Errorf("fake systemd: stop %s", unit)
	}
	s.n.stop(s.t)
	return nil
}
func (s nodeSystemd) ActiveState(ctx context.Context, unit string) (string, error) {
	if unit == GlusterdUnit && s.n.pid != 0 {
		return "active", nil
	}
	if unit != MountUnit || s.n.pid == 0 {
		return "inactive", nil
	}
	if _, err := run.Cmd(ctx, "nsenter", "-t", strconv.Itoa(s.n.pid), "-m", "mountpoint", "-q", filepath.Join(s.n.dir, "mnt")); err != nil {
		return "inactive", nil
	}
	return "active", nil
}

// newGlusterLAN starts three glusterds. With tls each starts with the secure-access switch on, as the image's
// ExecStartPre (kiln-firstboot glusterd-tls) sets it on a node that has no formation record yet.
func newGlusterLAN(t testing.TB, tls bool) []*gnode {
	t.Helper()
	base, err := os.MkdirTemp("", "kgl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	var ns []*gnode
	for i, h := range testenv.LAN(t, "kgl", netip.MustParsePrefix("10.99.7.0/24"), 3) {
		id := string(rune('a' + i))
		n := &gnode{ns: h.NS, dir: filepath.Join(base, id)}
		n.m = member.Member{ID: id, Hostname: "kiln-" + id, Addr: h.Addr, Alive: true}
		bricks := filepath.Join(n.dir, "var/lib/kiln/bricks")
		if err := os.MkdirAll(bricks, 0o755); err != nil {
			t.Fatal(err)
		}
		gsh(t, "mount", "-t", "tmpfs", "-o", "size=64m", "kgl", bricks)
		if tls {
			if err := glustertls.Enable(n.dir); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { syscall.Unmount(bricks, syscall.MNT_DETACH) })
		t.Cleanup(func() {
			if t.Failed() {
				if b, err := os.ReadFile(filepath.Join(n.dir, "log", "glusterd.log")); err == nil {
					lines := strings.Split(strings.TrimSpace(string(b)), "\n")
					t.Logf("glusterd %s log tail:\n%s", id, strings.Join(lines[max(0, len(lines)-25):], "\n"))
				}
			}
			n.stop(t)
		})
		n.start(t)
		ns = append(ns, n)
	}
	return ns
}

// TestReimageRealGlusterd: three real glusterds form the replica-3 volume with storage TLS through the
// reconciler; files are written through a FUSE mount; then one node is reimaged (glusterd state, brick and TLS
// files wiped, fresh UUID). Its reconciler issues itself a new certificate and switches TLS on, adopts the old
// UUID from the pool map, probes back in, recreates its brick with the volume-id xattr, starts it and heals it
// in full: it ends with its old UUID, every brick online, no pending heal, and every file on its brick.
func TestReimageRealGlusterd(t *testing.T) {
	needGlusterd(t)
	ns := newGlusterLAN(t, true)
	ms := []member.Member{ns[0].m, ns[1].m, ns[2].m}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	recs := make([]*Reconciler, 3)
	clock := &backoffClock{recs: recs}
	for i, n := range ns {
		recs[i] = New(NewCLI(n.runner), nodeSystemd{t, n}, n.dir, log.With("node", n.m.ID))
		recs[i].now = clock.now
	}
	ctx := context.Background()
	f := &state.Formation{Initialiser: "a", StorageCA: newCA(t)}
	pass := func(i int) (*state.State, error) {
		s := &state.State{Inputs: state.Inputs{Expected: 3, Formation: f, ReplaceAfter: time.Hour}, Observed: state.Observed{Self: ms[i], Members: ms}, Swarm: state.SwarmOutput{Active: true}}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		_, err := recs[i].Reconcile(cctx, s)
		gossip(ms, i, s)
		if i == 0 && s.Gluster.PoolUUIDs != nil {
			f.GlusterPeers = s.Gluster.PoolUUIDs
		}
		return s, err
	}
	until := func(what string, within time.Duration, cond func() (bool, string)) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			var errs []string
			for i := range 3 {
				if s, err := pass(i); err != nil {
					errs = append(errs, fmt.Sprintf("%s: %v (%s)", ms[i].ID, err, s.Status["gluster"]))
				}
			}
			clock.round()
			ok, detail := cond()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s: %s; errors: %s", what, within, detail, strings.Join(errs, "; "))
			}
		}
	}
	mounted := func() (bool, string) {
		for _, n := range ns {
			if st, _ := (nodeSystemd{t, n}).ActiveState(ctx, MountUnit); st != "active" {
				return false, n.m.ID + " not mounted"
			}
		}
		return true, ""
	}
	// The first create fails on purpose (brick parents missing); the coordinator then waits createRetryAfter
	// (on backoffClock's time).
	// For that the followers must look reported (fresh) before their first pass, which is also what makes
	// their brick parents: as if their agents had reported from a pass that ran before their reconciler
	// made the directory (the image's tmpfiles.d makes it at boot, so on a node this takes a broken image).
	// Their certificates are there too, or the coordinator would not probe them.
	for i := 1; i < 3; i++ {
		ms[i].GlusterEpoch = member.FreshGluster
		if _, err := glustertls.Ensure(ns[i].dir, f.StorageCA, ms[i].ID); err != nil {
			t.Fatal(err)
		}
		ms[i].StorageTLS = true
	}
	until("formed and mounted everywhere", 4*time.Minute, mounted)
	if len(f.GlusterPeers) != 3 {
		t.Fatalf("pool map %v, want 3 entries", f.GlusterPeers)
	}
	oldC := f.GlusterPeers[ns[2].m.Addr.String()]
	for i := range 20 {
		p := filepath.Join(ns[0].dir, "mnt", fmt.Sprintf("f%02d", i))
		if _, err := run.Cmd(ctx, "nsenter", "-t", strconv.Itoa(ns[0].pid), "-m", "sh", "-c", fmt.Sprintf("echo record-%d > %s", i, p)); err != nil {
			t.Fatal(err)
		}
	}

	// Reimage C: glusterd state, brick and TLS files gone, a fresh glusterd with a new UUID in plaintext (as on
	// a host without the image's ExecStartPre: the reconciler switches TLS on itself), and an agent that has
	// not said it speaks TLS.
	c := ns[2]
	c.stop(t)
	ms[2].StorageTLS = false
	for _, d := range []string{"var/lib/glusterd", "var/lib/kiln/bricks/data", "var/lib/kiln/tls"} {
		if err := os.RemoveAll(filepath.Join(c.dir, d)); err != nil {
			t.Fatal(err)
		}
	}
	c.start(t)
	if u, _ := glusterd.ReadUUID(filepath.Join(c.dir, glusterd.InfoFile)); u == oldC || u == "" {
		t.Fatalf("reimaged glusterd UUID %q, want a fresh one (old %s)", u, oldC)
	}

	brick := filepath.Join(c.dir, BrickPath)
	until("reimaged node back in place and healed", 4*time.Minute, func() (bool, string) {
		if u, _ := glusterd.ReadUUID(filepath.Join(c.dir, glusterd.InfoFile)); u != oldC {
			return false, "UUID " + u
		}
		out, err := ns[0].runner(ctx, "--xml", "volume", "heal", VolumeName, "info")
		if err != nil {
			return false, err.Error()
		}
		hs, err := ParseHealInfo(out)
		if err != nil {
			return false, err.Error()
		}
		for _, h := range hs {
			if h.Status != "Connected" || h.Entries != 0 {
				return false, fmt.Sprintf("heal info %+v", hs)
			}
		}
		for i := range 20 {
			b, err := os.ReadFile(filepath.Join(brick, fmt.Sprintf("f%02d", i)))
			if err != nil || string(b) != fmt.Sprintf("record-%d\n", i) {
				return false, fmt.Sprintf("brick file f%02d: %q %v", i, b, err)
			}
		}
		return true, ""
	})
	peers, err := recs[2].cli.Peers(ctx)
	if err != nil || len(peers) != 2 || !peers[0].InCluster() || !peers[1].InCluster() {
		t.Fatalf("reimaged node's pool: %+v %v", peers, err)
	}
	// Which crawl filled the brick (docs/self-healing.md section 2): the self-heal daemons' statistics
	// name each crawl's type (FULL or INDEX) and how many entries it healed.
	if out, err := ns[0].run(ctx, "--mode=script", "volume", "heal", VolumeName, "statistics"); err == nil {
		t.Logf("heal statistics:\n%s", out)
	} else {
		t.Logf("heal statistics: %v", err)
	}
}

// TestRecoverRealGlusterd: two of three glusterds are lost for good; the survivor's volume is read-only
// (quorum). Recover (the gluster half of `kiln-firstboot recover --force-new-cluster`) shrinks the volume to
// the survivor's brick with both quorums lifted, and the mount takes writes again. A fresh machine on a lost
// node's address then joins as a newcomer and the coordinator grows the volume back to replica 2 with it.
func TestRecoverRealGlusterd(t *testing.T) {
	needGlusterd(t)
	ns := newGlusterLAN(t, false)
	ms := []member.Member{ns[0].m, ns[1].m, ns[2].m}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	recs := make([]*Reconciler, 3)
	clock := &backoffClock{recs: recs}
	for i, n := range ns {
		recs[i] = New(NewCLI(n.runner), nodeSystemd{t, n}, n.dir, log.With("node", n.m.ID))
		recs[i].now = clock.now
	}
	ctx := context.Background()
	f := &state.Formation{Initialiser: "a"}
	pass := func(i int) error {
		if !ms[i].Alive {
			return nil
		}
		s := &state.State{Inputs: state.Inputs{Expected: 3, Formation: f, ReplaceAfter: time.Hour}, Observed: state.Observed{Self: ms[i], Members: ms}, Swarm: state.SwarmOutput{Active: true}}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		_, err := recs[i].Reconcile(cctx, s)
		gossip(ms, i, s)
		return err
	}
	until := func(what string, within time.Duration, cond func() (bool, string)) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			var errs []string
			for i := range 3 {
				if err := pass(i); err != nil {
					errs = append(errs, fmt.Sprintf("%s: %v", ms[i].ID, err))
				}
			}
			clock.round()
			ok, detail := cond()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s: %s; errors: %s", what, within, detail, strings.Join(errs, "; "))
			}
		}
	}
	write := func(n *gnode, name string) error {
		_, err := run.Cmd(ctx, "nsenter", "-t", strconv.Itoa(n.pid), "-m", "sh", "-c",
			fmt.Sprintf("echo %s > %s", name, filepath.Join(n.dir, "mnt", name)))
		return err
	}
	until("formed and mounted", 4*time.Minute, func() (bool, string) {
		for _, n := range ns {
			if st, _ := (nodeSystemd{t, n}).ActiveState(ctx, MountUnit); st != "active" {
				return false, n.m.ID + " not mounted"
			}
		}
		return true, ""
	})
	if err := write(ns[0], "before"); err != nil {
		t.Fatal(err)
	}

	ns[1].stop(t)
	ns[2].stop(t)
	ms[1].Alive, ms[2].Alive = false, false
	deadline := time.Now().Add(time.Minute)
	for write(ns[0], "without-quorum") == nil {
		if time.Now().After(deadline) {
			t.Fatal("the survivor still takes writes a minute after losing two of three bricks")
		}
		time.Sleep(time.Second) // ping-timeout (5 s) must pass before the client notices
	}
	if err := recs[0].Recover(ctx, ms[0].Addr); err != nil {
		t.Fatal(err)
	}
	out, err := ns[0].runner(ctx, "--xml", "volume", "info", VolumeName)
	if err != nil {
		t.Fatal(err)
	}
	v, err := ParseVolumeInfo(out)
	if err != nil || len(v.Bricks) != 1 || v.Bricks[0] != ms[0].Addr.String()+":"+BrickPath {
		t.Fatalf("after recover: %+v %v; want the survivor's brick only", v, err)
	}
	if peers, err := recs[0].cli.Peers(ctx); err != nil || len(peers) != 0 {
		t.Fatalf("after recover: peers %+v %v; want none", peers, err)
	}
	deadline = time.Now().Add(time.Minute)
	for write(ns[0], "after-recover") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the survivor does not take writes a minute after recover")
		}
		time.Sleep(time.Second) // the client reconnects to the new volfile
	}
	if err := pass(0); err != nil { // options restored (quorum auto on a single brick is fine)
		t.Fatal(err)
	}

	// A fresh machine where b was: a newcomer; the coordinator grows the volume back.
	b := ns[1]
	for _, d := range []string{"var/lib/glusterd", "var/lib/kiln/bricks/data"} {
		os.RemoveAll(filepath.Join(b.dir, d))
	}
	b.start(t)
	ms[1].Alive = true
	brick := filepath.Join(b.dir, BrickPath)
	until("volume grown back with the newcomer", 3*time.Minute, func() (bool, string) {
		out, err := ns[0].runner(ctx, "--xml", "volume", "info", VolumeName)
		if err != nil {
			return false, err.Error()
		}
		v, err := ParseVolumeInfo(out)
		if err != nil || v.Replica != 2 {
			return false, fmt.Sprintf("volume %+v %v", v, err)
		}
		for _, name := range []string{"before", "after-recover"} {
			if got, err := os.ReadFile(filepath.Join(brick, name)); err != nil || string(got) != name+"\n" {
				return false, fmt.Sprintf("newcomer brick %s: %q %v", name, got, err)
			}
		}
		return true, ""
	})
}

// gossip does what the agent's metadata does between passes: the glusterd epoch node i observed reaches
// every member's view (the coordinator probes only members that reported one).
func gossip(ms []member.Member, i int, s *state.State) {
	if s.Gluster.Epoch != "" {
		ms[i].GlusterEpoch = s.Gluster.Epoch
	}
	ms[i].StorageTLS = ms[i].StorageTLS || s.Gluster.TLS
}

// backoffClock is the real-glusterd tests' clock: real time, except that while a coordinator holds a create
// back (createRetryAfter after a failed create) every round of passes moves it on by backoffStep. The
// reconcilers see the back-off and the followers' orphanGrace run their course, in a few rounds instead of
// three minutes of waiting.
type backoffClock struct {
	recs   []*Reconciler
	mu     sync.Mutex
	offset time.Duration
}

// backoffStep is as much time as one round of passes is taken to last while a create is held back: longer
// than a TCG node's pass, and a sixth of createRetryAfter, so the grace and the back-off each span rounds.
const backoffStep = 30 * time.Second

func (c *backoffClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// round is called after every round of passes.
func (c *backoffClock) round() {
	now := c.now()
	for _, r := range c.recs {
		if f := r.mem.createFailed; !f.IsZero() && now.Before(f.Add(createRetryAfter)) {
			c.mu.Lock()
			c.offset += backoffStep
			c.mu.Unlock()
			return
		}
	}
}
