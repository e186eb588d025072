// Command lab measures kiln lab boot times: one VM of an image alone, then `lab up` of N nodes until every node
// answers ssh, in the same run on the same machine, and prints a table.
//
//	go run ./bench/lab -image out/node.raw [-nodes 3]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
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
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	root, err := os.MkdirTemp("", "kiln-bench-lab-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(root)

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
