// Command form measures kiln cluster formation (make bench-form): three fresh nodes with a cluster
// config, from lab up to formed, with per-phase times per node (booted, discovered, swarm, gluster mounted,
// VIP, formed); and, in the same run, the plain boot of the same image with no cluster config (the agent idles
// waiting for one). The figure the issue asks for is "formed − last multi-user.target" (target ≤ 30 s).
//
// Times are relative to lab up. Boot instants are systemd's ActiveEnterTimestampMonotonic of multi-user.target,
// mapped to the host clock through the guest's uptime; milestones come from an in-guest sampler (1 s period, one
// ssh session per node) reading the agent's status.json, /var/data and the VIP — a milestone reached before the
// node's ssh answered shows as the first sample after it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/kiln-project/kiln/firstboot/status"
	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/labtest"
	"github.com/kiln-project/kiln/test/formation"
)

func main() {
	img := flag.String("image", "", "raw node image (default $KILN_IMAGE, else <repo>/out/node.raw)")
	nodes := flag.Int("nodes", 3, "nodes to form")
	timeout := flag.Duration("timeout", 30*time.Minute, "bound for each lab (boot and formation)")
	skipPlain := flag.Bool("skip-plain", false, "skip the plain boot (no cluster config) run")
	root := flag.String("root", "", "lab root (default: a temp dir)")
	journals := flag.String("journals", "", "directory to save each formation node's journal in (<node>.log, monotonic time) before the lab goes down")
	flag.Parse()
	if err := run(*img, *nodes, *timeout, *skipPlain, *root, *journals); err != nil {
		fmt.Fprintln(os.Stderr, "bench-form:", err)
		os.Exit(1)
	}
}

func run(img string, nodes int, timeout time.Duration, skipPlain bool, root, journals string) error {
	if img != "" {
		os.Setenv("KILN_IMAGE", img)
	}
	img, err := formation.ImagePath()
	if err != nil {
		return err
	}
	if root == "" {
		dir, err := os.MkdirTemp("", "kiln-bench-form-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		root = dir
	}
	if others := otherLabs(); len(others) > 0 {
		fmt.Printf("warning: other labs are running (%s): their guests compete for the same cores, figures will be slower\n", strings.Join(others, ", "))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx := context.Background()

	var plain *plainResult
	if !skipPlain {
		p, err := plainBoot(ctx, img, nodes, timeout, root, log)
		if err != nil {
			return fmt.Errorf("plain boot: %w", err)
		}
		plain = p
	}
	f, err := formationRun(ctx, img, nodes, timeout, root, journals, log)
	if err != nil {
		return fmt.Errorf("formation: %w", err)
	}
	report(os.Stdout, plain, f)
	return nil
}

type plainResult struct {
	ssh, multiUser map[string]time.Duration
	phases         map[string]string
}

// plainBoot boots the image without a cluster config: the agent starts, finds no config and waits, so this is
// the boot cost alone.
func plainBoot(ctx context.Context, img string, n int, timeout time.Duration, root string, log *slog.Logger) (*plainResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name := fmt.Sprintf("bfp%d", os.Getpid()%100000)
	up := time.Now()
	l, err := lab.Up(ctx, lab.Options{Name: name, Root: root, Image: img, Nodes: n, Accel: labtest.Accel(), Logger: log})
	defer func() { _ = lab.Down(context.Background(), root, name) }()
	if err != nil {
		return nil, err
	}
	ssh, err := l.WaitBooted(ctx)
	if err != nil {
		return nil, err
	}
	ns, err := l.Nodes()
	if err != nil {
		return nil, err
	}
	r := &plainResult{ssh: ssh, multiUser: map[string]time.Duration{}, phases: map[string]string{}}
	for _, node := range ns {
		// ssh answers before multi-user.target is reached (its timestamp reads 0 until then): wait for it.
		var at time.Time
		err := formation.Poll(ctx, time.Second, node.Name()+" multi-user.target", func(ctx context.Context) (bool, string, error) {
			var err error
			if at, err = formation.UnitActiveAt(ctx, node, "multi-user.target"); err != nil {
				return false, err.Error(), nil
			}
			return !at.IsZero(), "not reached", nil
		})
		if err != nil {
			return nil, err
		}
		r.multiUser[node.Name()] = at.Sub(up)
		// Without a config the agent reports an error phase and status exits non-zero: read it anyway.
		r.phases[node.Name()] = "?"
		if res, err := node.Exec(ctx, "kiln-firstboot", "status", "--json"); err == nil {
			var st status.Status
			if json.Unmarshal(res.Stdout, &st) == nil {
				r.phases[node.Name()] = string(st.Phase)
			}
		}
	}
	return r, l.Down(ctx)
}

type nodeResult struct {
	ssh, multiUser time.Duration
	tl             formation.Timeline
}

type formResult struct {
	up    time.Time
	nodes map[string]*nodeResult
}

func formationRun(ctx context.Context, img string, n int, timeout time.Duration, root, journals string, log *slog.Logger) (*formResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cfg, c, err := formation.ClusterConfig("bench", n)
	if err != nil {
		return nil, err
	}
	vip := c.Cluster.VIP.Addr()
	name := fmt.Sprintf("bff%d", os.Getpid()%100000)
	res := &formResult{up: time.Now(), nodes: map[string]*nodeResult{}}
	l, err := lab.Up(ctx, lab.Options{Name: name, Root: root, Image: img, Nodes: n, ClusterConfig: cfg, Accel: labtest.Accel(), Logger: log})
	defer func() { _ = lab.Down(context.Background(), root, name) }()
	if err != nil {
		return nil, err
	}
	ns, err := l.Nodes()
	if err != nil {
		return nil, err
	}
	// The VIP milestone is the cluster's, not every node's: any node reaching it ends that wait for all.
	var vipMu sync.Mutex
	var vipAt time.Time
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(ns))
	for i, node := range ns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ssh, err := node.WaitBooted(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			boot, err := formation.GuestBoot(ctx, node)
			if err != nil {
				errs[i] = err
				return
			}
			tl := formation.Timeline{}
			done := func(tl formation.Timeline) bool {
				vipMu.Lock()
				defer vipMu.Unlock()
				if at, ok := tl[formation.MilestoneVIP]; ok && (vipAt.IsZero() || at.Before(vipAt)) {
					vipAt = at
				}
				_, formed := tl[formation.MilestoneFormed]
				return formed && !vipAt.IsZero()
			}
			if err := formation.SampleNode(ctx, node, vip, boot, tl, done); err != nil {
				errs[i] = err
				return
			}
			if !done(tl) {
				errs[i] = fmt.Errorf("%s: not formed: %w; reached %v", node.Name(), ctx.Err(), tl)
				return
			}
			mu_, err := formation.UnitActiveAt(ctx, node, "multi-user.target")
			if err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			res.nodes[node.Name()] = &nodeResult{ssh: ssh, multiUser: mu_.Sub(res.up), tl: tl}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if journals != "" {
		saveJournals(journals, ns)
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(os.Stderr, formation.Diagnose(ctx, ns))
		return nil, err
	}
	return res, l.Down(ctx)
}

// saveJournals writes each node's journal of this boot to dir/<node>.log with guest monotonic timestamps: where
// the formation's time went, step by step (docs/measurements.md has one such breakdown). Failures are reported,
// not fatal.
func saveJournals(dir string, ns []*lab.Node) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "journals:", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, node := range ns {
		res, err := node.Exec(ctx, "journalctl", "-b", "-o", "short-monotonic", "--no-pager")
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, node.Name()+".log"), res.Stdout, 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "journals: %s: %v\n", node.Name(), err)
		}
	}
}

func report(w *os.File, plain *plainResult, f *formResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	sec := func(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()) }
	if plain != nil {
		fmt.Fprintln(w, "plain boot (no cluster config), seconds after lab up:")
		fmt.Fprintln(tw, "node\tmulti-user\tssh\tagent\t")
		var last time.Duration
		for _, name := range sortedNames(plain.multiUser) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", name, sec(plain.multiUser[name]), sec(plain.ssh[name]), plain.phases[name])
			last = max(last, plain.multiUser[name])
		}
		fmt.Fprintf(tw, "last\t%s\t\t\t\n", sec(last))
		tw.Flush()
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "formation, seconds after lab up (milestones: first 1 s sample showing them):")
	fmt.Fprintln(tw, "node\tmulti-user\tssh\tdiscovered\tswarm\tmounted\tvip\tformed\t")
	cluster := map[string]time.Duration{}
	var lastBoot time.Duration
	for _, name := range sortedNames(f.nodes) {
		r := f.nodes[name]
		row := []string{name, sec(r.multiUser), sec(r.ssh)}
		lastBoot = max(lastBoot, r.multiUser)
		for _, m := range formation.Milestones {
			at, ok := r.tl[m]
			switch {
			case ok:
				d := at.Sub(f.up)
				row = append(row, sec(d))
				if m == formation.MilestoneVIP {
					if c, seen := cluster[m]; !seen || d < c {
						cluster[m] = d
					}
				} else {
					cluster[m] = max(cluster[m], d)
				}
			case m == formation.MilestoneVIP:
				row = append(row, "-")
			default:
				row = append(row, "?")
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	row := []string{"cluster", sec(lastBoot), ""}
	for _, m := range formation.Milestones {
		row = append(row, sec(cluster[m]))
	}
	fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	tw.Flush()
	fmt.Fprintf(w, "\ncluster row: last node for every milestone, first node for vip (only the holder has it). ssh: since the node's own qemu start.\n")
	fmt.Fprintf(w, "formed − last multi-user.target: %s s (target ≤ 30 s)\n", sec(cluster[formation.MilestoneFormed]-lastBoot))
	if plain != nil {
		var plainLast time.Duration
		for _, d := range plain.multiUser {
			plainLast = max(plainLast, d)
		}
		fmt.Fprintf(w, "last multi-user.target: %s s with a cluster config, %s s without (boot cost of the agent's work)\n", sec(lastBoot), sec(plainLast))
	}
}

func sortedNames[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// otherLabs lists kiln lab namespaces already present (other runs on this machine).
func otherLabs() []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil
	}
	var labs []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "kiln-") {
			labs = append(labs, f[0])
		}
	}
	return labs
}
