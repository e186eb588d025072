package vrrp

import (
	"context"
	"fmt"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"
)

// InfoAPI is the part of the docker client the health check uses.
type InfoAPI interface {
	Info(ctx context.Context) (system.Info, error)
	SwarmInspect(ctx context.Context) (swarm.Swarm, error)
}

// Healthy is the check behind `kiln-firstboot health` (keepalived's track script; exit 0 = healthy, 1 =
// unhealthy, within keepalived's 2 s timeout): this node may hold the VIP only while dockerd answers and the
// node is an active swarm member that sees a manager (a manager without a reachable quorum loses
// ControlAvailable). Ingress is not probed: with no service published on 80/443 yet every node would fail.
//
// A manager is asked SwarmInspect first: it reads the cluster object through the raft leader, so it succeeds
// only with quorum, and it costs dockerd nothing else. Info is the fallback (workers, failures) because
// dockerd answers every Info by executing `runc --version` and `docker-init --version`: keepalived runs this
// check every 2 s, and under TCG those two execs on every check kept a lab node's CPU saturated.
func Healthy(ctx context.Context, cli InfoAPI) error {
	if _, err := cli.SwarmInspect(ctx); err == nil {
		return nil
	}
	info, err := cli.Info(ctx)
	if err != nil {
		return fmt.Errorf("health: docker: %w", err)
	}
	sw := info.Swarm
	if sw.LocalNodeState != swarm.LocalNodeStateActive {
		return fmt.Errorf("health: swarm state %s", sw.LocalNodeState)
	}
	if !sw.ControlAvailable && len(sw.RemoteManagers) == 0 {
		return fmt.Errorf("health: swarm node %s sees no manager", sw.NodeID)
	}
	// A manager cut off from the majority still reports ControlAvailable (it is a manager by role); what
	// shows the lost quorum is that dockerd could not list the nodes for this very Info call (docker 20.10
	// fills Swarm.Error with "The swarm does not have a leader…", and leaves the counts at 0). A minority
	// manager must give the VIP up, so this is unhealthy. Proven with real dockerds in
	// firstboot/swarm (TestQuorumLossRealDockerd).
	if sw.ControlAvailable && (sw.Error != "" || sw.Nodes == 0) {
		return fmt.Errorf("health: manager %s without quorum: %s", sw.NodeID, sw.Error)
	}
	return nil
}
