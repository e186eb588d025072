// Command heal measures self-healing (make bench-heal). On one formed three-node lab that runs the test
// service (3 replicas, published on 80) behind the VIP, each scenario runs -runs times, the cluster healed
// between runs, and the median of each figure is printed against its target (docs/measurements.md):
//
//   - VIP gap: the longest time without an answer from VIP:443 (a completed connect, or a RST while nothing
//     listens there), probed every 100 ms from the lab host (inside the lab namespace, like a client on the
//     LAN). Not port 22: every connect there starts an sshd on the holder; at 10 a second a 1-vCPU TCG guest
//     falls behind, pre-auth sshds pile up and MaxStartups drops the bench's own ssh sessions, so the
//     "healed" check would never see the holder again. A RST costs the kernel only.
//   - storage stall: the longest time without an acknowledged write (append + fsync every 250 ms on
//     /var/data) on a node the fault spares; after a power cut, from the cut until a write on a node that
//     came back is acknowledged.
//   - service back: the longest time without a 200 from GET http://VIP/, probed every 250 ms.
//   - to redundancy (reimage only): from the reimaged node's power-on until 3 bricks are online with no
//     entry pending heal, with 100 MB on the volume.
//
// Every window runs from the fault until all three figures recovered. Under TCG on two cores the figures
// are far above what hardware gives; they are for comparing changes on the same machine.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/labtest"
	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/test/formation"
	"github.com/kiln-project/kiln/test/healing"
)

// Bounds (TCG guests on two cores: boots take minutes).
const (
	formTimeout    = 25 * time.Minute
	recoverTimeout = 10 * time.Minute // VIP, writes and service back after a fault
	pollEvery      = 5 * time.Second
	vipProbeEvery  = 100 * time.Millisecond
	httpProbeEvery = 250 * time.Millisecond
	writerInterval = 250 // ms
	blobMiB        = 100
)

var scenarios = []string{"loss", "cut", "reimage"}

func main() {
	img := flag.String("image", "", "raw node image (default $KILN_IMAGE, else <repo>/out/node.raw)")
	runs := flag.Int("runs", 3, "runs per scenario (the median is printed)")
	only := flag.String("scenarios", strings.Join(scenarios, ","), "scenarios to run, comma-separated: "+strings.Join(scenarios, ", "))
	root := flag.String("root", "", "lab root (default: a temp dir)")
	flag.Parse()
	if *img != "" {
		os.Setenv("KILN_IMAGE", *img)
	}
	want := strings.Split(*only, ",")
	for _, s := range want {
		if !slices.Contains(scenarios, s) {
			fmt.Fprintf(os.Stderr, "bench-heal: -scenarios: unknown scenario %q (known: %s)\n", s, strings.Join(scenarios, ", "))
			os.Exit(2)
		}
	}
	if *runs < 1 {
		fmt.Fprintln(os.Stderr, "bench-heal: -runs must be at least 1")
		os.Exit(2)
	}
	res, err := run(*root, want, *runs)
	report(os.Stdout, want, res)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-heal:", err)
		os.Exit(1)
	}
}

// result is one run's figures; zero means not measured.
type result struct {
	vipGap, stall, serviceBack, redundancy time.Duration
}

// bench is a formed lab with its probes.
type bench struct {
	l     *lab.Lab
	nodes []*lab.Node
	vip   netip.Addr
	tar   []byte
	vipOK *instants // successful VIP connects
	webOK *instants // successful GETs through the VIP
}

func run(root string, want []string, runs int) (map[string][]result, error) {
	img, err := formation.ImagePath()
	if err != nil {
		return nil, err
	}
	if root == "" {
		dir, err := os.MkdirTemp("", "kiln-bench-heal-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		root = dir
	}
	ctx := context.Background()
	tar, err := formation.TestsvcTarball(ctx)
	if err != nil {
		return nil, err
	}
	cfgFile, cfg, err := formation.ClusterConfig("benchheal", 3)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("bheal%d", os.Getpid()%100000)
	l, err := lab.Up(ctx, lab.Options{Name: name, Root: root, Image: img, Nodes: 3, ClusterConfig: cfgFile, Accel: labtest.Accel()})
	defer func() {
		if err := lab.Down(context.Background(), root, name); err != nil {
			fmt.Fprintln(os.Stderr, "bench-heal: lab down:", err)
		}
	}()
	if err != nil {
		return nil, err
	}
	nodes, err := l.Nodes()
	if err != nil {
		return nil, err
	}
	b := &bench{l: l, nodes: nodes, vip: cfg.Cluster.VIP.Addr(), tar: tar}
	progress("forming")
	fctx, cancel := context.WithTimeout(ctx, formTimeout)
	defer cancel()
	if _, err := formation.WaitFormed(fctx, nodes, pollEvery); err != nil {
		return nil, err
	}
	if err := b.deployService(fctx); err != nil {
		return nil, err
	}
	if _, err := formation.Exec(fctx, nodes[0], "sh", "-c", fmt.Sprintf("mkdir -p %s && head -c %dM /dev/urandom > %s/blob && sync", healing.DataDir, blobMiB, healing.DataDir)); err != nil {
		return nil, fmt.Errorf("write %d MiB on the volume: %w", blobMiB, err)
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	b.vipOK = probe(pctx, vipProbeEvery, func(ctx context.Context) bool {
		return netns.Do(l.Namespace(), func() error {
			c, err := (&net.Dialer{Timeout: 500 * time.Millisecond}).DialContext(ctx, "tcp", netip.AddrPortFrom(b.vip, 443).String())
			if err == nil {
				c.Close()
			}
			if formation.Classify(err) == formation.Closed {
				return nil // the holder's kernel answered
			}
			return err
		}) == nil
	})
	b.webOK = probe(pctx, httpProbeEvery, func(ctx context.Context) bool {
		code, _, err := formation.HTTPGet(ctx, l.Namespace(), netip.Addr{}, b.vip, 80, "/", 2*time.Second)
		return err == nil && code == 200
	})
	out := map[string][]result{}
	for _, sc := range want {
		for i := range runs {
			progress(fmt.Sprintf("%s run %d/%d", sc, i+1, runs))
			var r result
			var err error
			switch sc {
			case "loss":
				r, err = b.loss(ctx, i)
			case "cut":
				r, err = b.cut(ctx, i)
			case "reimage":
				r, err = b.reimage(ctx, i)
			}
			if err != nil {
				return out, fmt.Errorf("%s run %d: %w", sc, i+1, err)
			}
			progress(fmt.Sprintf("%s run %d: VIP gap %s, stall %s, service back %s, to redundancy %s", sc, i+1, r.vipGap, r.stall, r.serviceBack, r.redundancy))
			out[sc] = append(out[sc], r)
		}
	}
	return out, nil
}

// loss powers the VIP holder off hard, measures until VIP, writes and service are back, then starts it again
// and waits until healed.
func (b *bench) loss(ctx context.Context, i int) (result, error) {
	holder, err := b.holder(ctx)
	if err != nil {
		return result{}, err
	}
	var survivor *lab.Node
	for _, n := range b.nodes {
		if n.Name() != holder.Name() {
			survivor = n
			break
		}
	}
	w, err := b.writer(ctx, survivor, fmt.Sprintf("bench-loss-%d", i))
	if err != nil {
		return result{}, err
	}
	fault := time.Now()
	if err := holder.Kill(ctx); err != nil {
		return result{}, err
	}
	r, err := b.measure(ctx, fault, w)
	if err != nil {
		return r, err
	}
	if err := holder.Start(ctx); err != nil {
		return r, err
	}
	if err := b.healed(ctx); err != nil {
		return r, err
	}
	return r, b.verify(ctx, w, survivor)
}

// cut powers every node off at once and starts them all again.
func (b *bench) cut(ctx context.Context, i int) (result, error) {
	w, err := b.writer(ctx, b.nodes[0], fmt.Sprintf("bench-cut-%d", i))
	if err != nil {
		return result{}, err
	}
	fault := time.Now()
	if err := b.l.PowerCut(ctx); err != nil {
		return result{}, err
	}
	acked := w.Stop()
	for _, n := range b.nodes {
		if err := n.Start(ctx); err != nil {
			return result{}, err
		}
	}
	// Storage is back when a write on a node that came back is acknowledged (the old writer died with it).
	var writable time.Time
	probeFile := fmt.Sprintf("%s/bench-cut-%d.probe", healing.DataDir, i)
	end, err := b.recovered(ctx, fault, func() bool {
		if !writable.IsZero() {
			return true
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if _, err := formation.Exec(wctx, b.nodes[0], "sh", "-c", "date >> "+probeFile+" && sync "+probeFile); err == nil {
			writable = time.Now()
		}
		return !writable.IsZero()
	})
	if err != nil {
		return result{}, err
	}
	r := result{vipGap: b.vipOK.longestGap(fault, end), stall: writable.Sub(fault), serviceBack: b.webOK.longestGap(fault, end)}
	if err := b.healed(ctx); err != nil {
		return r, err
	}
	content, err := formation.Exec(ctx, b.nodes[1], "sh", "-c", w.Source)
	if err != nil {
		return r, err
	}
	if lost, corrupt := healing.Verify(content, acked); len(lost) > 0 || len(corrupt) > 0 {
		return r, fmt.Errorf("%d of %d acknowledged records lost, %d corrupt", len(lost), len(acked), len(corrupt))
	}
	return r, nil
}

// reimage gives the last node a fresh disk (same machine) and measures power-on to full redundancy.
func (b *bench) reimage(ctx context.Context, i int) (result, error) {
	target, other := b.nodes[2], b.nodes[0]
	w, err := b.writer(ctx, other, fmt.Sprintf("bench-reimage-%d", i))
	if err != nil {
		return result{}, err
	}
	fault := time.Now()
	if err := target.Reimage(ctx); err != nil { // kill, fresh disk, power on
		return result{}, err
	}
	powerOn := time.Now()
	r, err := b.measure(ctx, fault, w)
	if err != nil {
		return r, err
	}
	if err := b.healed(ctx); err != nil {
		return r, err
	}
	r.redundancy = time.Since(powerOn)
	// The fresh disk has no test image: put it back so the service returns to 3/3 before the next run.
	if _, err := formation.InstallTestsvc(ctx, target, b.tar); err != nil {
		return r, err
	}
	if err := b.serviceReplicas(ctx); err != nil {
		return r, err
	}
	return r, b.verify(ctx, w, target)
}

// measure waits until VIP, the writer and the service are back after the fault and returns their gaps.
func (b *bench) measure(ctx context.Context, fault time.Time, w *healing.Writer) (result, error) {
	end, err := b.recovered(ctx, fault, func() bool { return w.AckedSince(fault) > 0 })
	if err != nil {
		return result{}, err
	}
	return result{vipGap: b.vipOK.longestGap(fault, end), stall: w.LongestStall(fault, end), serviceBack: b.webOK.longestGap(fault, end)}, nil
}

// recovered waits until the VIP and the service answered after the fault and storageBack reports true;
// the window ends a second later, so a gap still open shows in full.
func (b *bench) recovered(ctx context.Context, fault time.Time, storageBack func() bool) (time.Time, error) {
	rctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	defer cancel()
	err := formation.Poll(rctx, time.Second, "VIP, storage and service back", func(context.Context) (bool, string, error) {
		v, s, web := b.vipOK.since(fault), storageBack(), b.webOK.since(fault)
		return v && s && web, fmt.Sprintf("vip %v storage %v service %v", v, s, web), nil
	})
	return time.Now(), err
}

func (b *bench) holder(ctx context.Context) (*lab.Node, error) {
	var holder *lab.Node
	hctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	defer cancel()
	err := formation.Poll(hctx, pollEvery, "one VIP holder", func(ctx context.Context) (bool, string, error) {
		hs, err := formation.VIPHolders(ctx, b.nodes, b.vip)
		if err != nil || len(hs) != 1 {
			return false, fmt.Sprintf("holders %v (%v)", hs, err), nil
		}
		for _, n := range b.nodes {
			if n.Name() == hs[0] {
				holder = n
			}
		}
		return holder != nil, "", nil
	})
	return holder, err
}

func (b *bench) writer(ctx context.Context, n *lab.Node, name string) (*healing.Writer, error) {
	w, err := healing.StartWriter(ctx, n, name, 1_000_000, writerInterval)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	defer cancel()
	return w, w.WaitAcked(wctx, 10)
}

func (b *bench) healed(ctx context.Context) error {
	return healing.WaitHealed(ctx, b.nodes[0], b.nodes, b.vip.String())
}

func (b *bench) verify(ctx context.Context, w *healing.Writer, n *lab.Node) error {
	acked := w.Stop()
	content, err := formation.Exec(ctx, n, "sh", "-c", w.Source)
	if err != nil {
		return err
	}
	if lost, corrupt := healing.Verify(content, acked); len(lost) > 0 || len(corrupt) > 0 {
		return fmt.Errorf("read on %s: %d of %d acknowledged records lost, %d corrupt", n.Name(), len(lost), len(acked), len(corrupt))
	}
	return nil
}

func (b *bench) deployService(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	defer cancel()
	return formation.DeployWeb(sctx, b.nodes, b.tar, formation.Web{})
}

func (b *bench) serviceReplicas(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	defer cancel()
	return formation.Poll(sctx, pollEvery, "service web 3/3", func(ctx context.Context) (bool, string, error) {
		ok, detail := formation.ServiceConverged(ctx, b.nodes[0], "web")
		return ok, detail, nil
	})
}

// instants records when a probe succeeded.
type instants struct {
	mu sync.Mutex
	at []time.Time
}

func (s *instants) since(t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.at) > 0 && s.at[len(s.at)-1].After(t)
}

func (s *instants) longestGap(since, until time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return healing.LongestGap(s.at, since, until)
}

// probe calls ok every interval (never two at once) until ctx ends, and records the successes.
func probe(ctx context.Context, every time.Duration, ok func(context.Context) bool) *instants {
	s := &instants{}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if ok(ctx) {
				s.mu.Lock()
				s.at = append(s.at, time.Now())
				s.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func progress(msg string) {
	fmt.Fprintf(os.Stderr, "%s bench-heal: %s\n", time.Now().Format("15:04:05"), msg)
}

func median(rs []result, f func(result) time.Duration) string {
	var ds []time.Duration
	for _, r := range rs {
		if d := f(r); d > 0 {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return "-"
	}
	slices.Sort(ds)
	return ds[len(ds)/2].Round(100 * time.Millisecond).String()
}

func report(w *os.File, want []string, res map[string][]result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tRUNS\tVIP GAP\tSTORAGE STALL\tSERVICE BACK\tTO REDUNDANCY")
	labels := map[string]string{"loss": "node loss (VIP holder off)", "cut": "power cut (all back)", "reimage": fmt.Sprintf("reimage (%d MiB on volume)", blobMiB)}
	for _, sc := range want {
		rs := res[sc]
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", labels[sc], len(rs),
			median(rs, func(r result) time.Duration { return r.vipGap }),
			median(rs, func(r result) time.Duration { return r.stall }),
			median(rs, func(r result) time.Duration { return r.serviceBack }),
			median(rs, func(r result) time.Duration { return r.redundancy }))
	}
	fmt.Fprintln(tw, "target\t\t≤ 2s\t≤ 10s\t≤ 20s\t≤ 5m")
	tw.Flush()
	fmt.Fprintln(w, "medians of the runs; TCG guests on 2 cores, not hardware figures")
}
