package healing

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/clusterhealth"
	"github.com/kiln-project/kiln/firstboot/gluster"
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/recovery"
	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/test/formation"
)

// Bounds. TCG guests on a 2-core host are slow (see test/formation): boots take minutes.
const (
	// FormTimeout bounds formation (and re-formation after a power cut).
	FormTimeout = 25 * time.Minute
	// healTimeout bounds "back to healed" after a fault: a reboot (minutes under TCG), rejoin, full heal.
	healTimeout = 25 * time.Minute
	// failoverTimeout bounds the VIP moving and writes resuming after a hard power-off (detection 4 s, VRRP
	// 2 s, gluster ping-timeout 5 s; TCG adds a lot).
	failoverTimeout = 3 * time.Minute
	// PollEvery is the pause between two observations of a converging state.
	PollEvery = 5 * time.Second
	// healedPollEvery is WaitHealed's pause. One Healed observation is a dozen commands over ssh, two of
	// them `gluster volume heal … info` (each a glfsheal client connecting to every brick); each takes several
	// seconds on loaded guests, so at 5 s they would run back to back for the whole heal, on the very nodes
	// whose swarm certificate requests must get through.
	healedPollEvery = 20 * time.Second
	// writerRecords and writerInterval: a writer outlives any scenario (it is stopped explicitly).
	writerRecords  = 1_000_000
	writerInterval = 250 // ms
)

// Cluster is a formed three-node lab: what every scenario starts from, and what it leaves healed.
type Cluster struct {
	Lab   *lab.Lab
	Nodes []*lab.Node
	VIP   string
	// Web says the web service runs (formation.CreateWebService): scenarios then also write through the VIP.
	Web bool
	// Routed says the web service is behind Traefik (formation.Web.Routed): the writes go to the VIP's 443.
	Routed bool
	// Testsvc is the web service's image tarball. A node whose disk was replaced gets it again, as it would
	// pull it from a registry: without it swarm retries the node's web task every few seconds for as long
	// as the scenario lasts: raft writes on managers that are busy enough already.
	Testsvc []byte
	// WhileLost, when set, runs in NodeLoss while the killed node is down (after the VIP moved and writes
	// resumed, before the node is started again): what else must come back on the survivors is checked on
	// the same loss (TestFormation: HTTPS through Traefik). killed is when the power went off.
	WhileLost func(ctx context.Context, t testing.TB, lost *lab.Node, killed time.Time)
}

// reinstallTestsvc loads the web service's image on n once its dockerd answers (bounded by healTimeout).
func reinstallTestsvc(ctx context.Context, t testing.TB, c Cluster, n *lab.Node) {
	t.Helper()
	if !c.Web || c.Testsvc == nil {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, healTimeout)
	defer cancel()
	err := formation.Poll(ictx, PollEvery, n.Name()+": web image loaded", func(ctx context.Context) (bool, string, error) {
		out, err := formation.InstallTestsvc(ctx, n, c.Testsvc)
		if err != nil {
			return false, err.Error(), nil // still booting, or dockerd not up yet
		}
		return true, out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// NodeLoss is scenarios 1 and 2: the VIP holder is powered off hard; the VIP moves, the two survivors keep
// swarm quorum and a writable volume; the node comes back, rejoins, heals, and nothing acknowledged is lost.
func NodeLoss(ctx context.Context, t testing.TB, c Cluster) {
	settled(ctx, t, c)
	nodes, vip := c.Nodes, c.VIP
	holder := vipHolder(ctx, t, nodes, vip)
	survivors := others(nodes, holder)
	ws := startWriters(ctx, t, c, survivors[0], "loss", 20)

	killed := time.Now()
	if err := holder.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(ctx, failoverTimeout)
	newHolder := vipHolder(fctx, t, survivors, vip)
	t.Logf("VIP on %s %s after the power-off", newHolder.Name(), time.Since(killed).Round(time.Second))
	if err := ws.waitAcked(fctx, 10); err != nil {
		t.Fatalf("volume not writable on the survivors: %v", err)
	}
	t.Logf("writes resumed %s after the power-off", time.Since(killed).Round(time.Second))
	err := formation.Poll(fctx, PollEvery, "survivors keep swarm quorum", func(ctx context.Context) (bool, string, error) {
		ready, detail, err := readyManagers(ctx, survivors[0])
		return err == nil && ready == 2, detail, nil
	})
	if err != nil {
		fcancel()
		t.Fatal(err)
	}
	// The operator's view from a survivor: not healthy (exit 1), naming the lost node.
	err = formation.Poll(fctx, PollEvery, "kiln cluster status names the lost node", func(ctx context.Context) (bool, string, error) {
		r, code, err := formation.ClusterStatus(ctx, c.Lab, survivors[0])
		if err != nil {
			return false, err.Error(), nil
		}
		down := slices.ContainsFunc(r.Members, func(m clusterhealth.Member) bool { return !m.Alive && m.Addr == mustAddr(holder) })
		return code == 1 && !r.Healthy && down, fmt.Sprintf("exit %d, problems %q", code, r.Problems), nil
	})
	fcancel()
	if err != nil {
		t.Fatal(err)
	}
	if c.WhileLost != nil {
		c.WhileLost(ctx, t, holder, killed)
	}

	if err := holder.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitHealed(ctx, t, survivors[0], nodes, vip)
	// nopreempt: the VIP stays where it went; the returning node does not pull it back.
	if h := vipHolder(ctx, t, nodes, vip); h.Name() != newHolder.Name() {
		t.Errorf("VIP moved back to %s after the node returned; nopreempt wants it to stay on %s", h.Name(), newHolder.Name())
	}
	ws.verify(ctx, t, holder)
}

// PowerCut is scenario 3: every node loses power at once and all start again: back to formed with no
// hand, the same swarm and volume (no re-initialisation, no double join), and nothing acknowledged lost.
func PowerCut(ctx context.Context, t testing.TB, c Cluster) {
	settled(ctx, t, c)
	l, nodes, vip := c.Lab, c.Nodes, c.VIP
	_, swarmBefore, err := formation.SwarmInfo(ctx, nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	volBefore := mustExec(ctx, t, nodes[0], "sh", "-c", "gluster volume info data | grep '^Volume ID'")
	ws := startWriters(ctx, t, c, nodes[0], "cut", 30)
	if err := l.PowerCut(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, FormTimeout)
	_, err = formation.WaitFormed(fctx, nodes, PollEvery)
	fcancel()
	if err != nil {
		t.Fatal(err)
	}
	waitHealed(ctx, t, nodes[0], nodes, vip)
	for _, n := range nodes {
		_, id, err := formation.SwarmInfo(ctx, n)
		if err != nil || id != swarmBefore {
			t.Errorf("%s: swarm %q after the power cut, want %q (%v)", n.Name(), id, swarmBefore, err)
		}
	}
	if v, err := formation.Exec(ctx, nodes[0], "sh", "-c", "gluster volume info data | grep '^Volume ID'"); err != nil || v != volBefore {
		t.Errorf("volume after the power cut: %q, want %q (%v)", v, volBefore, err)
	}
	// Every record acknowledged before the power cut; the writers ran on, failing, while the nodes were off.
	ws.verify(ctx, t, nodes[2])
}

// PowerCutTwoBack is scenario 4: all nodes lose power, only two come back: they resume swarm (2 of 3
// managers), a writable volume (2 of 3 bricks) and the VIP; then the third returns and everything heals.
func PowerCutTwoBack(ctx context.Context, t testing.TB, c Cluster) {
	settled(ctx, t, c)
	l, nodes, vip := c.Lab, c.Nodes, c.VIP
	if err := l.PowerCut(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[:2] {
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, FormTimeout)
	defer fcancel()
	vipHolder(fctx, t, nodes[:2], vip)
	err := formation.Poll(fctx, PollEvery, "two nodes: swarm quorum and a mounted volume", func(ctx context.Context) (bool, string, error) {
		ready, detail, err := readyManagers(ctx, nodes[0])
		if err != nil {
			return false, detail, nil
		}
		_, merr := formation.Exec(ctx, nodes[1], "mountpoint", "-q", "/var/data")
		return ready == 2 && merr == nil, fmt.Sprintf("%s, mount: %v", detail, merr), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ws := startWriters(fctx, t, c, nodes[1], "two", 20)
	if err := nodes[2].Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitHealed(ctx, t, nodes[0], nodes, vip)
	ws.verify(ctx, t, nodes[2])
}

// Reimage is scenario 5: a node's disk is replaced by a fresh image on the same machine (same id,
// hostname and address, empty /var). The stale swarm entry is removed, the node rejoins as a manager, its
// glusterd takes its old place and its brick is healed in full; nothing acknowledged is lost.
func Reimage(ctx context.Context, t testing.TB, c Cluster) {
	settled(ctx, t, c)
	nodes, vip := c.Nodes, c.VIP
	target := nodes[2]
	uuidBefore := mustExec(ctx, t, target, "sh", "-c", "grep ^UUID= /var/lib/glusterd/glusterd.info")
	hostBefore := mustExec(ctx, t, target, "hostname")
	ws := startWriters(ctx, t, c, nodes[0], "reimage", 30)
	if err := target.Reimage(ctx); err != nil {
		t.Fatal(err)
	}
	reinstallTestsvc(ctx, t, c, target)
	waitHealed(ctx, t, nodes[0], nodes, vip)
	if h, err := formation.Exec(ctx, target, "hostname"); err != nil || h != hostBefore {
		t.Errorf("hostname after reimage %q, want %q (%v)", h, hostBefore, err)
	}
	if u, err := formation.Exec(ctx, target, "sh", "-c", "grep ^UUID= /var/lib/glusterd/glusterd.info"); err != nil || u != uuidBefore {
		t.Errorf("glusterd %q after reimage, want the old %q (%v)", u, uuidBefore, err)
	}
	sns, err := formation.SwarmNodes(ctx, nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(sns) != 3 {
		t.Errorf("swarm entries after reimage: %v, want 3 (the stale one removed)", sns)
	}
	if err := ws.waitAcked(ctx, 10); err != nil {
		t.Fatal(err)
	}
	// Read from the reimaged node's own mount, and check its brick got the data by full heal.
	ws.verify(ctx, t, target)
	if _, err := formation.Exec(ctx, target, "test", "-s", onBrick(DataDir+"/reimage.log")); err != nil {
		t.Errorf("reimaged brick not healed: %v", err)
	}
}

// Partition is scenario 7: the VIP holder is cut off from its peers but still reachable from the lab host
// (clients). It must give the VIP up (its swarm manager loses quorum, so its health check fails) and its
// volume must refuse writes; after the link heals, no split-brain entries and nothing acknowledged lost.
func Partition(ctx context.Context, t testing.TB, c Cluster) {
	settled(ctx, t, c)
	nodes, vip := c.Nodes, c.VIP
	holder := vipHolder(ctx, t, nodes, vip)
	rest := others(nodes, holder)
	wMajority, err := StartWriter(ctx, rest[0], "majority", writerRecords, writerInterval)
	if err != nil {
		t.Fatal(err)
	}
	wMinority := startWriter(ctx, t, holder, "minority", 10)
	if err := holder.Partition(ctx, true); err != nil {
		t.Fatal(err)
	}
	healed := false
	defer func() {
		// A failed step must not leave the link cut: in TestChain the next scenario starts from this lab.
		if !healed {
			if err := holder.Heal(context.WithoutCancel(ctx)); err != nil {
				t.Errorf("heal %s's link after a failed step: %v", holder.Name(), err)
			}
		}
	}()
	fctx, fcancel := context.WithTimeout(ctx, failoverTimeout)
	defer fcancel()
	start := time.Now()
	// The cut-off node keeps the VIP until its manager has noticed the lost quorum and keepalived its failed
	// checks (docs/self-healing.md section 7): wait for the move, bounded by failoverTimeout.
	newHolder := vipHolderExcept(fctx, t, nodes, vip, holder)
	t.Logf("VIP moved from the cut-off %s to %s after %s", holder.Name(), newHolder.Name(), time.Since(start).Round(time.Second))
	if err := wMajority.WaitAcked(fctx, 10); err != nil {
		t.Fatalf("majority side not writable: %v", err)
	}
	waitRefused(fctx, t, wMinority, "minority refuses writes")
	checkRecoverRefused(ctx, t, holder, rest)
	healed = true
	if err := holder.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	waitHealed(ctx, t, rest[0], nodes, vip)
	verify(ctx, t, wMajority, holder)
	verify(ctx, t, wMinority, rest[0])
}

// checkRecoverRefused runs `recover --force-new-cluster` on a node cut off from the others, naming them lost:
// the others were seen moments ago (and still hold the quorum), so it must refuse and change nothing
// (docs/security.md, "Recover is guarded").
func checkRecoverRefused(ctx context.Context, t testing.TB, cutOff *lab.Node, others []*lab.Node) {
	t.Helper()
	var names []string
	for _, n := range others {
		st, err := formation.AgentStatus(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, st.Hostname)
	}
	out, err := formation.Exec(ctx, cutOff, "kiln-firstboot", "recover", "--force-new-cluster", "--lost", strings.Join(names, ","))
	if err == nil || !strings.Contains(err.Error(), recovery.ErrNotLost.Error()) {
		t.Fatalf("recover on the cut-off %s: %v\n%s\nwant %q", cutOff.Name(), err, out, recovery.ErrNotLost)
	}
}

// waitRefused waits until w's writes fail from some point on: between two polls (5 s, 20 write attempts)
// no write succeeded and some failed.
func waitRefused(ctx context.Context, t testing.TB, w *Writer, what string) {
	t.Helper()
	a1, f1 := w.Acked()
	err := formation.Poll(ctx, PollEvery, what, func(context.Context) (bool, string, error) {
		a2, f2 := w.Acked()
		done := a2 == a1 && f2 > f1
		detail := fmt.Sprintf("acked %d→%d failed %d→%d", a1, a2, f1, f2)
		a1, f1 = a2, f2
		return done, detail, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// WaitHealed polls Healed from `from` (every healedPollEvery, each observation bounded by formation.Poll)
// until it reports nothing missing, for at most the healing bound. Heal times it reports are therefore
// upper bounds, 20 s coarse.
func WaitHealed(ctx context.Context, from *lab.Node, nodes []*lab.Node, vip string) error {
	hctx, cancel := context.WithTimeout(ctx, healTimeout)
	defer cancel()
	return formation.Poll(hctx, healedPollEvery, "cluster healed", func(ctx context.Context) (bool, string, error) {
		missing, err := Healed(ctx, from, nodes, vip)
		if err != nil {
			return false, err.Error(), nil // a node still booting does not answer yet
		}
		return missing == "", missing, nil
	})
}

// waitHealed is WaitHealed failing t.
func waitHealed(ctx context.Context, t testing.TB, from *lab.Node, nodes []*lab.Node, vip string) {
	t.Helper()
	start := time.Now()
	if err := WaitHealed(ctx, from, nodes, vip); err != nil {
		t.Fatal(err)
	}
	t.Logf("healed %s after the fault was repaired", time.Since(start).Round(time.Second))
}

// settled waits until c is healed: every scenario starts from there. After a step that loaded the host (a
// fourth VM booting, a previous scenario) swarm may still be electing a leader or a node still be slow to
// answer; a fault injected then would test the previous disturbance, not this one.
func settled(ctx context.Context, t testing.TB, c Cluster) {
	t.Helper()
	start := time.Now()
	if err := WaitHealed(ctx, c.Nodes[0], c.Nodes, c.VIP); err != nil {
		t.Fatalf("the cluster is not healed before the scenario: %v", err)
	}
	t.Logf("started from the healed state (%s to confirm)", time.Since(start).Round(time.Second))
}

// verify stops the writer and checks every acknowledged record as read from node n's /var/data.
func verify(ctx context.Context, t testing.TB, w *Writer, n *lab.Node) {
	t.Helper()
	writers{w}.verify(ctx, t, n)
}

// writers are a scenario's record streams: one appended on node n's mount and, when the web service runs,
// one POSTed through the VIP (the client's view: VIP, routing mesh, a task, its bind-mounted volume).
type writers []*Writer

// startWriters starts the scenario's writers and waits until each has acks acknowledged records.
func startWriters(ctx context.Context, t testing.TB, c Cluster, n *lab.Node, name string, acks int) writers {
	t.Helper()
	ws := writers{startWriter(ctx, t, n, name, acks)}
	if c.Web {
		w := StartServiceWriter(ctx, c.Lab.Namespace(), netip.MustParseAddr(c.VIP), formation.Web{Routed: c.Routed}, name, writerInterval)
		if err := w.WaitAcked(ctx, acks); err != nil {
			w.Stop()
			t.Fatalf("writes through the VIP: %v", err)
		}
		ws = append(ws, w)
	}
	return ws
}

// waitAcked waits until every writer has more acknowledged records than now.
func (ws writers) waitAcked(ctx context.Context, more int) error {
	for _, w := range ws {
		if err := w.WaitAcked(ctx, more); err != nil {
			return fmt.Errorf("%s: %w", w.Source, err)
		}
	}
	return nil
}

// verify stops every writer and checks all its acknowledged records as read from node n's /var/data.
func (ws writers) verify(ctx context.Context, t testing.TB, n *lab.Node) {
	t.Helper()
	acked := make([]map[int]bool, len(ws))
	for i, w := range ws {
		acked[i] = w.Stop()
	}
	for i, w := range ws {
		if len(acked[i]) == 0 {
			t.Fatalf("writer (%s) had no acknowledged record", w.Source)
		}
		content := mustExec(ctx, t, n, "sh", "-c", w.Source)
		lost, corrupt := Verify(content, acked[i])
		if len(lost) > 0 || len(corrupt) > 0 {
			slices.Sort(lost)
			t.Fatalf("%s on %s: %d of %d acknowledged records lost (%v), corrupt lines %q", w.Source, n.Name(), len(lost), len(acked[i]), lost, corrupt)
		}
		t.Logf("%s on %s: all %d acknowledged records intact", w.Source, n.Name(), len(acked[i]))
	}
}

func vipHolder(ctx context.Context, t testing.TB, nodes []*lab.Node, vip string) *lab.Node {
	t.Helper()
	return vipHolderExcept(ctx, t, nodes, vip, nil)
}

// vipHolderExcept waits until exactly one of nodes holds the VIP and it is not except (nil: any).
func vipHolderExcept(ctx context.Context, t testing.TB, nodes []*lab.Node, vip string, except *lab.Node) *lab.Node {
	t.Helper()
	var holder *lab.Node
	what := "one VIP holder"
	if except != nil {
		what += " other than " + except.Name()
	}
	err := formation.Poll(ctx, PollEvery, what, func(ctx context.Context) (bool, string, error) {
		hs, err := formation.VIPHolders(ctx, nodes, netip.MustParseAddr(vip))
		if err != nil || len(hs) != 1 || (except != nil && hs[0] == except.Name()) {
			return false, fmt.Sprintf("holders %v (%v)", hs, err), nil
		}
		for _, n := range nodes {
			if n.Name() == hs[0] {
				holder = n
			}
		}
		return true, "", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return holder
}

func others(nodes []*lab.Node, not *lab.Node) []*lab.Node {
	var out []*lab.Node
	for _, n := range nodes {
		if n.Name() != not.Name() {
			out = append(out, n)
		}
	}
	return out
}

// startWriter starts a writer on n and waits until it has acks acknowledged records.
func startWriter(ctx context.Context, t testing.TB, n *lab.Node, name string, acks int) *Writer {
	t.Helper()
	w, err := StartWriter(ctx, n, name, writerRecords, writerInterval)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WaitAcked(ctx, acks); err != nil {
		t.Fatal(err)
	}
	return w
}

func mustExec(ctx context.Context, t testing.TB, n *lab.Node, argv ...string) string {
	t.Helper()
	out, err := formation.Exec(ctx, n, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readyManagers counts the Ready managers in n's node list; detail describes the list (or the error).
func readyManagers(ctx context.Context, n *lab.Node) (ready int, detail string, err error) {
	sns, err := formation.SwarmNodes(ctx, n)
	if err != nil {
		return 0, err.Error(), err
	}
	for _, s := range sns {
		if s.ReadyManager() {
			ready++
		}
	}
	return ready, fmt.Sprintf("%d ready managers in %v", ready, sns), nil
}

// Replacement is scenario 6: a member's machine dies for good and a new machine (new MAC, UUID, address,
// empty disk) takes its place on the network. After the cluster's replaceAfter, and only while quorum holds,
// the dead member is removed from swarm and its brick is replaced onto the newcomer, which is filled by a
// full heal: 3 Ready managers (the newcomer one of them), 3 bricks, the dead address gone, nothing lost.
func Replacement(ctx context.Context, t testing.TB, c Cluster) {
	settled(ctx, t, c)
	nodes, vip := c.Nodes, c.VIP
	target := nodes[2]
	oldAddr, err := target.Address()
	if err != nil {
		t.Fatal(err)
	}
	ws := startWriters(ctx, t, c, nodes[0], "replace", 20)
	cold := writeColdFile(ctx, t, nodes[0], "replace")
	if err := target.Replace(ctx); err != nil {
		t.Fatal(err)
	}
	reinstallTestsvc(ctx, t, c, target)
	newAddr, err := target.Address()
	if err != nil || newAddr == oldAddr {
		t.Fatalf("replaced node's address %q (was %q): %v", newAddr, oldAddr, err)
	}
	waitHealed(ctx, t, nodes[0], nodes, vip)
	info := mustExec(ctx, t, nodes[0], "gluster", "--mode=script", "volume", "info", "data")
	if strings.Contains(info, oldAddr+":") || !strings.Contains(info, newAddr+":") {
		t.Errorf("bricks after the replacement still name %s or lack %s:\n%s", oldAddr, newAddr, info)
	}
	if pool := mustExec(ctx, t, nodes[0], "gluster", "--mode=script", "pool", "list"); strings.Contains(pool, oldAddr) {
		t.Errorf("the dead peer %s is still in the pool:\n%s", oldAddr, pool)
	}
	ws.verify(ctx, t, target)
	checkBrickHolds(ctx, t, target, cold)
	checkDepartedAddr(ctx, t, c, oldAddr)
}

// checkDepartedAddr wants a departed member's address to be trusted no more: a device that gets it next (from
// DHCP) reaches ssh like any stranger, but none of the cluster ports on any member, so it can neither fetch the
// volume's volfile (24007) to mount it, nor reach a brick (49152+) or raft (2377). The prober is the lab
// host, holding the address on the lab bridge; ssh answering it shows the address itself works.
func checkDepartedAddr(ctx context.Context, t testing.TB, c Cluster, oldAddr string) {
	t.Helper()
	src, err := netip.ParseAddr(oldAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := formation.AddSource(ctx, c.Lab.Namespace(), netip.PrefixFrom(src, src.BitLen())); err != nil {
		t.Fatal(err)
	}
	ports := []int{22, 2377, 7946, 24007, 24008, 49152, 49153}
	for _, n := range c.Nodes {
		addr, err := n.Address()
		if err != nil {
			t.Fatal(err)
		}
		res, err := formation.Scan(ctx, c.Lab.Namespace(), src, netip.MustParseAddr(addr), ports, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		policy := formation.PortPolicy{MustAnswer: []int{22}}
		if bad := policy.Check(res); len(bad) > 0 {
			t.Errorf("%s from the departed member's address %s: %s (%s)", n.Name(), oldAddr, strings.Join(bad, "; "), formation.FormatScan(res))
		}
	}
}

// onBrick is where a file at path on the volume's mount lies on a node's brick.
func onBrick(path string) string {
	return gluster.BrickPath + strings.TrimPrefix(path, gluster.MountPoint)
}

// coldFile is a file written once on a node's mount before a fault and never touched again.
type coldFile struct{ path, sum string }

// writeColdFile writes 1 MiB of random data under DataDir on n and returns it with its checksum.
// The writers' logs are appended to while a new brick joins, so gluster marks them pending and an index heal
// copies them; a file nobody touches after the brick joined reaches it only through a full crawl (or the
// pending marks replace-brick and add-brick leave on the root), which is what this checks.
func writeColdFile(ctx context.Context, t testing.TB, n *lab.Node, name string) coldFile {
	t.Helper()
	p := DataDir + "/" + name + "-cold.bin"
	out := mustExec(ctx, t, n, "sh", "-c", "mkdir -p "+DataDir+" && head -c 1048576 /dev/urandom > "+p+
		" && sync && sha256sum "+p)
	sum, _, _ := strings.Cut(out, " ")
	return coldFile{path: p, sum: sum}
}

// checkBrickHolds wants n's own brick to hold f, byte for byte: read through the mount, a file is served by
// any replica, so only the brick shows whether a new brick was filled.
func checkBrickHolds(ctx context.Context, t testing.TB, n *lab.Node, f coldFile) {
	t.Helper()
	out, err := formation.Exec(ctx, n, "sha256sum", onBrick(f.path))
	if sum, _, _ := strings.Cut(out, " "); err != nil || sum != f.sum {
		t.Errorf("%s: brick copy of %s: %q %v; want sha256 %s (brick not filled)", n.Name(), f.path, out, err, f.sum)
	}
}

// LostQuorum is scenario 8: two of three members are lost for good. The survivor does not act on its own
// (its swarm has no leader, its volume refuses writes) and its status names the one command; after
// `kiln-firstboot recover --force-new-cluster` it serves again on its own (1 Ready manager, a writable
// volume with everything acknowledged before, the VIP). When the two come back they are taken in again
// (their old state set aside) and the cluster heals to three.
func LostQuorum(ctx context.Context, t testing.TB, c Cluster) {
	settled(ctx, t, c)
	nodes, vip := c.Nodes, c.VIP
	survivor, lost := nodes[0], nodes[1:]
	var lostNames []string
	for _, n := range lost {
		st, err := formation.AgentStatus(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		lostNames = append(lostNames, st.Hostname)
	}
	w := startWriter(ctx, t, survivor, "quorum", 20)
	cold := writeColdFile(ctx, t, survivor, "quorum")
	for _, n := range lost {
		if err := n.Kill(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, failoverTimeout)
	defer fcancel()
	err := formation.Poll(fctx, PollEvery, "survivor reports lost quorum and the command", func(ctx context.Context) (bool, string, error) {
		st, err := formation.AgentStatus(ctx, survivor)
		if err != nil {
			return false, err.Error(), nil
		}
		return strings.Contains(st.Swarm.Detail, "recover --force-new-cluster"), st.Swarm.State + ": " + st.Swarm.Detail, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitRefused(fctx, t, w, "survivor refuses writes without quorum")
	// recover refuses until the lost nodes have been gone member.LostFor, and says so.
	recoverCmd := []string{"kiln-firstboot", "recover", "--force-new-cluster", "--lost", strings.Join(lostNames, ",")}
	if out, err := formation.Exec(ctx, survivor, recoverCmd...); err == nil || !strings.Contains(err.Error(), "was seen") {
		t.Fatalf("recover right after the loss: %v\n%s\nwant a refusal naming when they were seen", err, out)
	}
	lctx, lcancel := context.WithTimeout(ctx, member.LostFor+5*time.Minute)
	defer lcancel()
	err = formation.Poll(lctx, 30*time.Second, "recover accepted once the lost nodes are gone long enough", func(ctx context.Context) (bool, string, error) {
		out, err := formation.Exec(ctx, survivor, recoverCmd...)
		if err != nil && strings.Contains(err.Error(), "was seen") {
			return false, err.Error(), nil
		}
		if err != nil {
			return false, out, fmt.Errorf("recover: %w\n%s", err, out)
		}
		return true, out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, healTimeout)
	defer rcancel()
	if err := w.WaitAcked(rctx, 10); err != nil {
		t.Fatalf("survivor not writable after recover: %v", err)
	}
	err = formation.Poll(rctx, PollEvery, "survivor: one Ready manager and the VIP", func(ctx context.Context) (bool, string, error) {
		ready, detail, err := readyManagers(ctx, survivor)
		if err != nil {
			return false, detail, nil
		}
		hs, herr := formation.VIPHolders(ctx, []*lab.Node{survivor}, netip.MustParseAddr(vip))
		return ready == 1 && herr == nil && len(hs) == 1, fmt.Sprintf("%s; VIP holders %v %v", detail, hs, herr), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range lost {
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitHealed(ctx, t, survivor, nodes, vip)
	verify(ctx, t, w, lost[0])
	for _, n := range lost {
		checkBrickHolds(ctx, t, n, cold)
	}
}

// mustAddr is n's address in the lab ("" when it has none).
func mustAddr(n *lab.Node) string {
	a, _ := n.Address()
	return a
}
