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
}

// Healthy is the check behind `kiln-firstboot health` (keepalived's track script; exit 0 = healthy, 1 =
// unhealthy, within keepalived's 2 s timeout): this node may hold the VIP only while dockerd answers and the
// node is an active swarm member that sees a manager (a manager without a reachable quorum loses
// ControlAvailable). Ingress is not probed: with no service published on 80/443 yet every node would fail.
func Healthy(ctx context.Context, cli InfoAPI) error {
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
	return nil
}
