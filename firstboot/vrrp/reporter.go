package vrrp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kiln-project/kiln/internal/files"
)

// HealthInterval is how often the agent re-checks health for keepalived. With keepalived watching the file by
// inotify, a node that loses quorum gives the VIP up within one interval plus one docker call.
const HealthInterval = 2 * time.Second

// HealthTimeout bounds one check: a dockerd that does not answer within it counts as a failed check. The
// `kiln-firstboot health` command uses it too, so a person sees the verdict keepalived is fed.
const HealthTimeout = 3 * time.Second

// Fall and Rise are how many checks in a row it takes to turn unhealthy and healthy again (keepalived's
// vrrp_script fall/rise). One slow answer is not a sick node: a loaded dockerd, busy starting containers,
// misses the timeout every few checks, and a verdict per check would move the VIP every few seconds. Three
// failures at 2 s apart is a node that has been unable to answer for 6 s and more.
const (
	Fall = 3
	Rise = 2
)

// FallSlow is Fall for checks that only timed out. A raft leader election or a manager catching up stalls
// the swarm API on every manager at once: when a member comes back after a power-off, both survivors' checks
// can time out together for many seconds; with Fall they would both release the VIP, and it would land
// wherever dockerd answered first, although nothing is wrong with its holder. A timeout proves nothing about
// quorum; an answer that says "no leader" does, and still flips after Fall. Eight timeouts in a row (about
// 40 s) is a node that cannot serve.
const FallSlow = 8

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
	// streak counts the checks in a row whose verdict differs from last; slow reports whether every failed
	// check in it only timed out.
	streak int
	slow   bool
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

// Once runs one check and writes the file when the verdict has changed for Fall (to unhealthy) or Rise (to
// healthy) checks in a row. The first verdict of a process is written at once: the file may be missing or
// left by a previous run.
func (h *HealthReporter) Once(ctx context.Context) {
	check := h.Check
	if check == nil {
		check = Healthy
	}
	cctx, cancel := context.WithTimeout(ctx, HealthTimeout)
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
		h.streak = 0
		return
	}
	if h.last != "" {
		timedOut := errors.Is(err, context.DeadlineExceeded)
		if h.streak == 0 {
			h.slow = timedOut
		}
		h.slow = h.slow && timedOut
		h.streak++
		need := Rise
		switch {
		case v == "1" && h.slow:
			need = FallSlow
		case v == "1":
			need = Fall
		}
		if h.streak < need {
			h.Log.Debug("vrrp health: verdict changing", "to", v, "checks", h.streak, "of", need, "reason", err)
			return
		}
	}
	h.streak = 0
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
	if err := files.Write(h.path(), []byte(v+"\n"), 0o644); err != nil {
		return fmt.Errorf("vrrp: health file: %w", err)
	}
	return nil
}
