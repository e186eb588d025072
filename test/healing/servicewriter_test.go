package healing

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/test/formation/testsvc/records"
)

// TestServiceWriter runs the through-the-VIP writer against testsvc's real handler in a namespace of its own
// (no VMs): records are acked only on 204, a window of 503s (a volume without quorum) counts as failures and
// a stall, and every acked record is in the task's file. Needs root (ip netns).
func TestServiceWriter(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for ip netns")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := fmt.Sprintf("kiln-hsw%d", os.Getpid()%100000)
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.CommandContext(ctx, "ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:80"); return err }); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var refusing atomic.Bool
	h := records.Handler("task1", dir)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refusing.Load() {
			http.Error(w, "read-only file system", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	w := StartServiceWriter(ctx, ns, netip.MustParseAddr("127.0.0.1"), "unit", 20)
	if err := w.WaitAcked(ctx, 10); err != nil {
		t.Fatal(err)
	}
	refusing.Store(true)
	refusedAt := time.Now()
	if err := waitFails(ctx, w, 5); err != nil {
		t.Fatal(err)
	}
	refusing.Store(false)
	if err := w.WaitAcked(ctx, 10); err != nil {
		t.Fatal(err)
	}
	acked := w.Stop()
	_, fails := w.Acked()
	if fails < 5 {
		t.Errorf("%d failures, want the refused window's ≥ 5", fails)
	}
	if stall := w.LongestStall(refusedAt, time.Now()); stall < 5*20*time.Millisecond {
		t.Errorf("longest stall %s, want at least the refused window", stall)
	}
	if !strings.HasSuffix(w.Source, "unit.*.log") {
		t.Errorf("Source %q, want every task's file of the stream", w.Source)
	}
	content, err := os.ReadFile(filepath.Join(dir, "unit.task1.log"))
	if err != nil {
		t.Fatal(err)
	}
	if lost, corrupt := Verify(string(content), acked); len(lost) > 0 || len(corrupt) > 0 {
		t.Errorf("%d of %d acked records lost (%v), corrupt %q", len(lost), len(acked), lost, corrupt)
	}
}

func waitFails(ctx context.Context, w *Writer, n int) error {
	for {
		if _, f := w.Acked(); f >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
