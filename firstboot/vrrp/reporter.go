package vrrp

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// HealthInterval is how often the agent re-checks health for keepalived. With keepalived watching the file by
// inotify, a node that loses quorum gives the VIP up within one interval plus one docker call.
const HealthInterval = 2 * time.Second

// healthTimeout bounds one check: a dockerd that does not answer within it is unhealthy, not awaited.
const healthTimeout = 1500 * time.Millisecond

// HealthReporter keeps HealthFile in step with Healthy: "0" healthy, "1" not. It writes only on a change
// (keepalived re-reads on every inotify event) and logs each change with its reason.
type HealthReporter struct {
	Docker InfoAPI
	// Path is the tracked file (empty: HealthFile).
	Path string
	Log  *slog.Logger
	// Check is Healthy unless a test replaces it.
	Check func(ctx context.Context, cli InfoAPI) error
	last  string
}

// Run checks every HealthInterval until ctx ends, then marks the node unhealthy: an agent that is not running
// cannot vouch for the node, so a stopped agent hands the VIP on (systemd restarts a crashed one).
func (h *HealthReporter) Run(ctx context.Context) {
	t := time.NewTicker(HealthInterval)
	defer t.Stop()
	for {
		h.Once(ctx)
		select {
		case <-ctx.Done():
			if err := h.write("1"); err != nil {
				h.Log.Warn("vrrp health: mark unhealthy on exit", "err", err)
			}
			return
		case <-t.C:
		}
	}
}

// Once runs one check and writes the file when the verdict changed (or was never written by this process).
func (h *HealthReporter) Once(ctx context.Context) {
	check := h.Check
	if check == nil {
		check = Healthy
	}
	cctx, cancel := context.WithTimeout(ctx, healthTimeout)
	err := check(cctx, h.Docker)
	cancel()
	if ctx.Err() != nil {
		return
	}
	v := "0"
	if err != nil {
		v = "1"
	}
	if v == h.last {
		return
	}
	if werr := h.write(v); werr != nil {
		h.Log.Warn("vrrp health: write", "path", h.path(), "err", werr)
		return
	}
	if err != nil {
		h.Log.Warn("vrrp health: unhealthy, this node may not hold the VIP", "reason", err)
	} else {
		h.Log.Info("vrrp health: healthy, this node may hold the VIP")
	}
	h.last = v
}

func (h *HealthReporter) path() string {
	if h.Path != "" {
		return h.Path
	}
	return HealthFile
}

// write replaces the file atomically: keepalived must never read an empty or half-written value.
func (h *HealthReporter) write(v string) error {
	p := h.path()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("vrrp: health file: %w", err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(v+"\n"), 0o644); err != nil {
		return fmt.Errorf("vrrp: health file: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("vrrp: health file: %w", err)
	}
	return nil
}
