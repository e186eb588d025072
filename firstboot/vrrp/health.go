package vrrp

import (
	"context"
	"fmt"
	"strings"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"
)

// InfoAPI is the part of the docker client the health check uses.
type InfoAPI interface {
	Info(ctx context.Context) (system.Info, error)
	SwarmInspect(ctx context.Context) (swarm.Swarm, error)
}

// Healthy is the check behind HealthReporter (and `kiln-firstboot health`, by hand): this node may hold the
// VIP only while dockerd answers and the node is an active swarm member that sees a manager (a manager without
// a reachable quorum loses ControlAvailable). Ingress is not probed: with no service published on 80/443 yet
// every node would fail.
//
// SwarmInspect comes first: it reads the cluster object through the raft leader, so it succeeds only on a
// manager with quorum, and it costs dockerd nothing else. Info is asked only when SwarmInspect says this node
// is not a manager (workers): dockerd answers every Info by executing `runc --version` and
// `docker-init --version`; under TCG those execs every 2 s keep a small node's CPU saturated, and on a
// manager that has lost its leader Info would only confirm the failure SwarmInspect already reports.
func Healthy(ctx context.Context, cli InfoAPI) error {
	_, err := cli.SwarmInspect(ctx)
	if err == nil {
		return nil
	}
	if !strings.Contains(err.Error(), "not a swarm manager") {
		return fmt.Errorf("health: %w", err)
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
