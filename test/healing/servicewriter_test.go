package healing

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/testenv"
	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/test/formation"
	"github.com/kiln-project/kiln/test/formation/testsvc/records"
)

// TestServiceWriter runs the through-the-VIP writer against testsvc's real handler in a namespace of its own
// (no VMs): records are acked only on 204, a window of 503s (a volume without quorum) counts as failures and
// a stall, and every acked record is in the task's file. Needs root (ip netns).
func TestServiceWriter(t *testing.T) {
	ns := testenv.Namespace(t, "kiln-hsw")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", formation.WebPort))
		return err
	}); err != nil {
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
	refused := time.Since(refusedAt)
	if err := w.WaitAcked(ctx, 10); err != nil {
		t.Fatal(err)
	}
	acked := w.Stop()
	_, fails := w.Acked()
	if fails < 5 {
		t.Errorf("%d failures, want the refused window's ≥ 5", fails)
	}
	// No ack can land inside the refused window but for one request already past the check when it opened.
	if stall := w.LongestStall(refusedAt, time.Now()); stall < refused/2 {
		t.Errorf("longest stall %s, want about the refused window (%s)", stall, refused)
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
