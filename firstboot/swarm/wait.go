package swarm

import (
	"context"
	"fmt"
	"time"

	"github.com/docker/docker/api/types/swarm"
)

// firstInfo is info for the start of a pass, aware that the agent starts beside dockerd, not after it
// (kiln-firstboot.service): at boot the election is usually decided while dockerd is still starting (20-25 s
// under TCG). work tells whether this pass's State gives the node swarm work (init or join).
//   - With work, and before dockerd ever answered: wait for it here, once per process (a dockerd down for good
//     must not hold every pass up), and act the moment it answers rather than at the next pass, 5 s later.
//   - Without work, before dockerd ever answered: ask briefly. dockerd's socket is systemd's, so a call waits
//     for a starting dockerd rather than fail; that held the pass, and the election decided meanwhile, until
//     dockerd was up (lab: 5 s more to the init).
func (r *Reconciler) firstInfo(ctx context.Context, work bool) (swarm.Info, error) {
	if r.waitedForDockerd {
		return r.info(ctx)
	}
	if !work {
		brief, cancel := context.WithTimeout(ctx, dockerdFirstAnswer)
		defer cancel()
		info, err := r.info(brief)
		if err != nil && ctx.Err() == nil {
			// Not a failure: nothing to do yet, and dockerd has not answered since the agent started.
			return info, fmt.Errorf("%w: %w", errDockerdStarting, err)
		}
		r.waitedForDockerd = err == nil
		return info, err
	}
	r.waitedForDockerd = true
	info, err := r.info(ctx)
	if err == nil {
		return info, nil
	}
	r.log.Info("swarm: waiting for dockerd to answer", "within", r.opts.StartWait, "err", err)
	err = r.poll(ctx, "dockerd answering", r.opts.StartWait, func() (bool, error) {
		info, err = r.info(ctx)
		return err == nil, err
	})
	return info, err
}

func (r *Reconciler) info(ctx context.Context) (swarm.Info, error) {
	i, err := r.cli.Info(ctx)
	if err != nil {
		return swarm.Info{}, fmt.Errorf("swarm: docker info: %w", err)
	}
	return i.Swarm, nil
}

// poll calls f until it reports done or timeout passes; f's errors are kept for the report (a daemon busy
// joining may fail a call or two). The pause starts at PollInterval and doubles up to pollBackoff times it: the
// first answers come quickly when the state is about to change, and a long wait does not ask dockerd four times
// a second. That matters on a small or emulated node, where every Info makes dockerd execute `runc --version`
// and `docker-init --version`: at a fixed 250 ms a waiting node asked for eight such execs a second.
func (r *Reconciler) poll(ctx context.Context, what string, timeout time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pause := r.opts.PollInterval
	t := time.NewTimer(pause)
	defer t.Stop()
	var last error
	for {
		done, err := f()
		if done {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("swarm: %s: not reached within %s (last error: %v)", what, timeout, last)
		case <-t.C:
		}
		pause = min(2*pause, pollBackoff*r.opts.PollInterval)
		t.Reset(pause)
	}
}

// pollBackoff bounds poll's pause at this multiple of PollInterval (2 s at the default 250 ms).
const pollBackoff = 8

// waitActive waits until the local node is active.
func (r *Reconciler) waitActive(ctx context.Context) (swarm.Info, error) {
	return r.waitState(ctx, "local node active", r.opts.ReadyTimeout, false)
}

// waitControl waits until the local node is active with its control plane (manager) available.
func (r *Reconciler) waitControl(ctx context.Context) (swarm.Info, error) {
	return r.waitState(ctx, "manager control plane available", r.opts.ControlTimeout, true)
}

func (r *Reconciler) waitState(ctx context.Context, what string, timeout time.Duration, control bool) (swarm.Info, error) {
	var info swarm.Info
	err := r.poll(ctx, what, timeout, func() (bool, error) {
		var err error
		if info, err = r.info(ctx); err != nil {
			return false, err
		}
		switch info.LocalNodeState {
		case swarm.LocalNodeStateActive:
			return info.ControlAvailable || !control, nil
		case swarm.LocalNodeStatePending:
			return false, nil
		default:
			return false, fmt.Errorf("state %s %s", info.LocalNodeState, info.Error)
		}
	})
	return info, err
}

// waitReady waits until the node list (from this manager) shows self Ready and, for a manager, reachable.
func (r *Reconciler) waitReady(ctx context.Context, self string, manager bool) ([]swarm.Node, error) {
	var nodes []swarm.Node
	err := r.poll(ctx, "node "+self+" ready in node list", r.opts.ReadyTimeout, func() (bool, error) {
		var err error
		if nodes, err = r.cli.NodeList(ctx, swarm.NodeListOptions{}); err != nil {
			return false, err
		}
		for _, n := range nodes {
			if n.ID != self {
				continue
			}
			ready := n.Status.State == swarm.NodeStateReady
			if manager {
				ready = ready && n.ManagerStatus != nil && n.ManagerStatus.Reachability == swarm.ReachabilityReachable
			}
			return ready, nil
		}
		return false, nil
	})
	return nodes, err
}
