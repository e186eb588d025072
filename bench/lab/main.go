// Command lab measures kiln lab boot times: one VM of an image alone, then `lab up` of N nodes until every node
// answers ssh, in the same run on the same machine, and prints a table.
//
//	go run ./bench/lab -image out/node.raw [-nodes 3]
//
// With -exec N it measures Node.Exec instead: one node is booted, then N sequential Exec(ctx, "true") are timed,
// and the node's own fork counter (/proc/stat "processes") is read before and after, and over 20 s idle before.
//
//	go run ./bench/lab -image out/node.raw -exec 100
//
// The processes Exec spawns on the host are counted from outside, by tracing the benchmark: the timed loop lies
// between the two unlinkat calls on execMarker paths (both fail with ENOENT; they only mark the trace):
//
//	strace -f -e trace=execve,clone,clone3,vfork,unlinkat -o trace.txt bin/bench-lab -image out/node.raw -exec 100
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/labtest"
)

func main() {
	image := flag.String("image", "out/node.raw", "raw node image")
	nodes := flag.Int("nodes", 3, "nodes in the multi-node lab")
	timeout := flag.Duration("timeout", 30*time.Minute, "bound on the whole benchmark")
	execs := flag.Int("exec", 0, "instead: boot one node and time this many sequential Exec(ctx, \"true\")")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	root, err := os.MkdirTemp("", "kiln-bench-lab-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(root)
	if *execs > 0 {
		if err := benchExec(ctx, root, *image, *execs, log); err != nil {
			fail(err)
		}
		return
	}

	type row struct {
		what  string
		total time.Duration
		each  map[string]time.Duration
	}
	var rows []row
	for _, n := range []int{1, *nodes} {
		name := fmt.Sprintf("bench%d", n)
		start := time.Now()
		l, err := lab.Up(ctx, lab.Options{Name: name, Root: root, Image: *image, Nodes: n,
			Accel: labtest.Accel(), Logger: log})
		if err == nil {
			var each map[string]time.Duration
			each, err = l.WaitBooted(ctx)
			rows = append(rows, row{fmt.Sprintf("lab up, %d node(s), until all answer ssh", n), time.Since(start), each})
		}
		if derr := lab.Down(context.Background(), root, name); derr != nil {
			fmt.Fprintln(os.Stderr, "down:", derr)
		}
		if err != nil {
			fail(err)
		}
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "RUN\tTOTAL\tPER NODE (start → ssh)")
	for _, r := range rows {
		var names []string
		for k := range r.each {
			names = append(names, k)
		}
		sort.Strings(names)
		per := ""
		for _, k := range names {
			per += fmt.Sprintf("%s=%s ", k, r.each[k].Round(100*time.Millisecond))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", r.what, r.total.Round(100*time.Millisecond), per)
	}
	if len(rows) == 2 {
		fmt.Fprintf(w, "ratio %d nodes / 1 node\t%.2f×\t\n", *nodes, float64(rows[1].total)/float64(rows[0].total))
	}
	w.Flush()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench-lab:", err)
	os.Exit(1)
}

// execMarker is the prefix of the paths benchExec unlinks around its timed loop, so a trace of the benchmark
// shows which processes the loop spawned.
const execMarker = "/nonexistent/kiln-bench-exec-"

// benchExec boots a one-node lab and times n sequential Exec(ctx, "true") on it.
func benchExec(ctx context.Context, root, image string, n int, log *slog.Logger) error {
	const name = "benchexec"
	l, err := lab.Up(ctx, lab.Options{Name: name, Root: root, Image: image, Nodes: 1, Accel: labtest.Accel(), Logger: log})
	defer func() {
		if derr := lab.Down(context.Background(), root, name); derr != nil {
			fmt.Fprintln(os.Stderr, "down:", derr)
		}
	}()
	if err != nil {
		return err
	}
	if _, err := l.WaitBooted(ctx); err != nil {
		return err
	}
	node, err := l.Node("node1")
	if err != nil {
		return err
	}
	forks := func() (int, error) {
		res, err := node.Exec(ctx, "sh", "-c", "grep ^processes /proc/stat")
		if err != nil || res.ExitCode != 0 {
			return 0, fmt.Errorf("read the guest's fork counter: exit %d: %w", res.ExitCode, err)
		}
		var v int
		_, err = fmt.Sscanf(string(res.Stdout), "processes %d", &v)
		return v, err
	}
	// Each reading's own forks fall between it and the next one: two readings back to back measure them. The
	// guest also forks on its own (timers, the agent): its rate over 20 s idle is subtracted below.
	const idle = 20 * time.Second
	var r [3]int
	for i := range r {
		if i == 2 {
			time.Sleep(idle)
		}
		if r[i], err = forks(); err != nil {
			return err
		}
	}
	readingForks := r[1] - r[0]
	idleRate := float64(r[2]-r[1]-readingForks) / idle.Seconds()
	before := r[2]
	_ = os.Remove(execMarker + "begin")
	each := make([]time.Duration, n)
	start := time.Now()
	for i := range n {
		t := time.Now()
		res, err := node.Exec(ctx, "true")
		if err != nil {
			return fmt.Errorf("exec %d: %w", i, err)
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("exec %d: exit %d: %s", i, res.ExitCode, res.Stderr)
		}
		each[i] = time.Since(t)
	}
	total := time.Since(start)
	_ = os.Remove(execMarker + "end")
	after, err := forks()
	if err != nil {
		return err
	}
	// A new handle on the lab, as each `kiln lab exec` process is: its first command.
	l2, err := lab.Open(root, name, log)
	if err != nil {
		return err
	}
	node2, err := l2.Node("node1")
	if err != nil {
		return err
	}
	t := time.Now()
	if _, err := node2.Exec(ctx, "true"); err != nil {
		return fmt.Errorf("exec on a new handle: %w", err)
	}
	fresh := time.Since(t)
	sorted := slices.Clone(each)
	slices.Sort(sorted)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FIGURE\tVALUE")
	fmt.Fprintf(w, "%d sequential Exec(ctx, \"true\")\t%s\n", n, total.Round(time.Millisecond))
	fmt.Fprintf(w, "per Exec: first / median / max\t%s / %s / %s\n", each[0].Round(100*time.Microsecond),
		sorted[n/2].Round(100*time.Microsecond), sorted[n-1].Round(100*time.Microsecond))
	fmt.Fprintf(w, "first Exec on a new lab handle\t%s\n", fresh.Round(100*time.Microsecond))
	// The last reading's own forks and the guest's own over the loop's time are not the loop's.
	own := idleRate * total.Seconds()
	fmt.Fprintf(w, "guest forks during the loop / the guest's own at its idle rate (%.2f/s) / the rest per Exec\t%d / %.0f / %.2f\n",
		idleRate, after-before-readingForks, own, (float64(after-before-readingForks)-own)/float64(n))
	return w.Flush()
}
