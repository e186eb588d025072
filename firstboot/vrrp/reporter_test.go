package vrrp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// Checks that only time out (a swarm API stalled by a raft election, on every manager at once) take FallSlow
// checks in a row to flip; one explicit failure among them makes it Fall again.
func TestHealthReporterTimeoutsNeedLonger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrrp-health")
	var verdict error
	reporter := func() *HealthReporter {
		return &HealthReporter{Path: path, Log: slog.New(slog.DiscardHandler),
			Check: func(context.Context, InfoAPI) error { return verdict }}
	}
	read := func() string { b, _ := os.ReadFile(path); return string(b) }
	h := reporter()
	h.Once(context.Background())
	verdict = fmt.Errorf("health: Get /v1.41/swarm: %w", context.DeadlineExceeded)
	for i := 1; i < FallSlow; i++ {
		h.Once(context.Background())
		if got := read(); got != "0\n" {
			t.Fatalf("after %d timed-out checks: file %q, want still 0", i, got)
		}
	}
	h.Once(context.Background())
	if got := read(); got != "1\n" {
		t.Fatalf("after %d timed-out checks in a row: file %q, want 1", FallSlow, got)
	}

	h = reporter()
	verdict = nil
	h.Once(context.Background())
	verdict = fmt.Errorf("health: %w", context.DeadlineExceeded)
	h.Once(context.Background())
	verdict = errors.New("health: The swarm does not have a leader")
	for i := 2; i < Fall; i++ {
		h.Once(context.Background())
	}
	if got := read(); got != "0\n" {
		t.Fatalf("flipped before %d checks: file %q", Fall, got)
	}
	h.Once(context.Background())
	if got := read(); got != "1\n" {
		t.Fatalf("a timeout then explicit failures, %d in a row: file %q, want 1", Fall, got)
	}
}

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
	// One or two failed checks are a slow answer, not a sick node; the third in a row flips the verdict.
	verdict = errors.New("no leader")
	for i := 1; i < Fall; i++ {
		h.Once(context.Background())
		if got := read(); got != "0\n" {
			t.Fatalf("after %d failed checks: file %q, want still 0", i, got)
		}
	}
	verdict = nil
	h.Once(context.Background()) // a success resets the count
	verdict = errors.New("no leader")
	for i := 1; i < Fall; i++ {
		h.Once(context.Background())
	}
	if got := read(); got != "0\n" {
		t.Fatalf("failures not in a row flipped the verdict: file %q", got)
	}
	h.Once(context.Background())
	if got := read(); got != "1\n" {
		t.Fatalf("after %d failed checks in a row: file %q, want 1", Fall, got)
	}
	verdict = nil
	for i := 1; i < Rise; i++ {
		h.Once(context.Background())
		if got := read(); got != "1\n" {
			t.Fatalf("after %d good checks: file %q, want still 1", i, got)
		}
	}
	h.Once(context.Background())
	if got := read(); got != "0\n" {
		t.Fatalf("after %d good checks in a row: file %q, want 0", Rise, got)
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
