package vrrp

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestHealthReporter: the file follows the check ("0" healthy, "1" not), is rewritten only on a change, and
// says unhealthy once the reporter stops.
func TestHealthReporter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "vrrp-health")
	var verdict error
	h := &HealthReporter{Path: path, Log: slog.New(slog.DiscardHandler),
		Check: func(context.Context, InfoAPI) error { return verdict }}
	read := func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	h.Once(context.Background())
	if got := read(); got != "0\n" {
		t.Fatalf("healthy: file %q, want 0", got)
	}
	st, _ := os.Stat(path)
	h.Once(context.Background())
	if st2, _ := os.Stat(path); !os.SameFile(st, st2) {
		t.Error("unchanged verdict rewrote the file (keepalived re-reads on every write)")
	}
	verdict = errors.New("no leader")
	h.Once(context.Background())
	if got := read(); got != "1\n" {
		t.Fatalf("unhealthy: file %q, want 1", got)
	}

	verdict = nil
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	cancel()
	<-done
	if got := read(); got != "1\n" {
		t.Fatalf("after stop: file %q, want 1 (a stopped agent cannot vouch for the node)", got)
	}
}
