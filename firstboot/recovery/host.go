package recovery

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/kiln-project/kiln/firstboot"
	"github.com/kiln-project/kiln/firstboot/gluster"
	"github.com/kiln-project/kiln/firstboot/identity"
	"github.com/kiln-project/kiln/firstboot/sdunit"
	"github.com/kiln-project/kiln/firstboot/status"
	kswarm "github.com/kiln-project/kiln/firstboot/swarm"
)

// AgentUnit is the agent's service.
const AgentUnit = "kiln-firstboot.service"

// Host returns this machine's Node: the local dockerd, systemd, glusterd and the agent's state under
// stateDir. close releases the connections.
func Host(ctx context.Context, docker *client.Client, stateDir string, log *slog.Logger) (n Node, close func(), err error) {
	id, err := identity.Get(identity.Options{Log: log})
	if err != nil {
		return Node{}, nil, fmt.Errorf("recover: identity: %w", err)
	}
	systemd, err := sdunit.Connect(ctx)
	if err != nil {
		return Node{}, nil, fmt.Errorf("recover: %w", err)
	}
	g := gluster.New(gluster.NewCLI(gluster.HostRunner), systemd, "", log)
	return Node{
		Status: func() (*status.Status, error) { return status.Read(status.DefaultPath) },
		SwarmInfo: func(ctx context.Context) (swarm.Info, error) {
			info, err := docker.Info(ctx)
			return info.Swarm, err
		},
		LeaderCheck: func(ctx context.Context) error {
			_, err := docker.NodeList(ctx, swarm.NodeListOptions{})
			return err
		},
		StopAgent:  func(ctx context.Context) error { return systemd.Stop(ctx, AgentUnit) },
		StartAgent: func(ctx context.Context) error { return systemd.Start(ctx, AgentUnit) },
		ForceSwarm: func(ctx context.Context, self netip.Addr) (string, error) {
			return kswarm.ForceNewCluster(ctx, docker, self, log)
		},
		ShrinkVolume: g.Recover,
		NewEpoch: func(listen string, now time.Time) (int, error) {
			return firstboot.NewEpoch(stateDir, id.ID, listen, now)
		},
	}, systemd.Close, nil
}
