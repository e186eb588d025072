// Package recovery restores service on a surviving node after the majority of the cluster is lost for good:
// the orchestration behind `kiln-firstboot recover --force-new-cluster`. It makes this node the whole
// cluster again (swarm forced to one manager, volume shrunk to this node's brick, a new formation epoch), so
// new nodes can grow the cluster back and old nodes that return start over instead of restoring the old
// majority.
package recovery

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/kiln-project/kiln/firstboot/status"
)

// ErrQuorumHolds is returned when the swarm still has a leader: recovery would throw away a working cluster,
// and the agent heals whatever else is wrong.
var ErrQuorumHolds = errors.New("the swarm has a leader (quorum holds): nothing to recover; the agent heals the rest")

// ErrNotManager is returned on a node that is not an active swarm manager: only a surviving manager holds
// the raft log a forced cluster is rebuilt from.
var ErrNotManager = errors.New("this node is not an active swarm manager: recover on a surviving manager")

// Node is what a recovery acts through. Host gives the node's real ones; tests give fakes.
type Node struct {
	// Status is the agent's report, read before anything else: its membership is what CheckLost judges.
	Status func() (*status.Status, error)
	// SwarmInfo reports this node's swarm state.
	SwarmInfo func(ctx context.Context) (swarm.Info, error)
	// LeaderCheck returns nil when the swarm answers manager calls, that is when it has a leader.
	LeaderCheck func(ctx context.Context) error
	// StopAgent and StartAgent stop and start the node agent, so it neither acts on nor rewrites the old
	// formation record while the cluster is rebuilt underneath it.
	StopAgent, StartAgent func(ctx context.Context) error
	// ForceSwarm makes this node the swarm's only manager and returns its manager address (host:2377).
	ForceSwarm func(ctx context.Context, self netip.Addr) (listen string, err error)
	// ShrinkVolume shrinks the gluster volume to this node's brick.
	ShrinkVolume func(ctx context.Context, self netip.Addr) error
	// NewEpoch starts a new epoch in the formation record, with this node as initialiser and listen as the
	// only manager address, and returns it.
	NewEpoch func(listen string, now time.Time) (int, error)
}

// Run recovers the cluster on this node and returns the new epoch. It refuses, changing nothing, unless
// lost names every other member and each has been gone for LostFor (CheckLost), and this node is an active
// manager of a swarm that has lost its leader. Once it has stopped the agent it starts it again whatever
// happens: the agent reports what is left to do.
func Run(ctx context.Context, n Node, lost []string, log *slog.Logger) (epoch int, err error) {
	st, err := n.Status()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("recover: %w", err)
	}
	if err := CheckLost(st, lost, time.Now()); err != nil {
		return 0, fmt.Errorf("recover: %w", err)
	}
	info, err := n.SwarmInfo(ctx)
	if err != nil {
		return 0, fmt.Errorf("recover: docker: %w", err)
	}
	if info.LocalNodeState != swarm.LocalNodeStateActive || !info.ControlAvailable {
		return 0, fmt.Errorf("recover: %w (state %s)", ErrNotManager, info.LocalNodeState)
	}
	// A swarm without a leader answers manager calls with an error after its own timeout; ours bounds it.
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	leaderErr := n.LeaderCheck(lctx)
	cancel()
	if leaderErr == nil {
		return 0, fmt.Errorf("recover: %w", ErrQuorumHolds)
	}
	self, err := netip.ParseAddr(info.NodeAddr)
	if err != nil {
		return 0, fmt.Errorf("recover: swarm node address %q: %w", info.NodeAddr, err)
	}

	log.Warn("recover: stopping the agent", "reason", "operator: recover --force-new-cluster", "swarm_error", leaderErr)
	if err := n.StopAgent(ctx); err != nil {
		return 0, fmt.Errorf("recover: stop agent: %w", err)
	}
	defer func() {
		if serr := n.StartAgent(context.WithoutCancel(ctx)); serr != nil {
			log.Error("recover: start the agent again", "err", serr)
			err = errors.Join(err, fmt.Errorf("recover: start agent: %w", serr))
		}
	}()
	listen, err := n.ForceSwarm(ctx, self)
	if err != nil {
		return 0, fmt.Errorf("recover: %w", err)
	}
	if err := n.ShrinkVolume(ctx, self); err != nil {
		return 0, fmt.Errorf("recover: %w", err)
	}
	epoch, err = n.NewEpoch(listen, time.Now())
	if err != nil {
		return 0, fmt.Errorf("recover: formation record: %w", err)
	}
	log.Warn("recover: done; new nodes grow the cluster back, returning old nodes start over", "epoch", epoch)
	return epoch, nil
}
