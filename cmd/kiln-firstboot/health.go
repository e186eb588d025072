package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/vrrp"
)

// healthTimeout stays under keepalived's script timeout (2 s) so a hung dockerd reads as unhealthy, not as a
// killed script.
const healthTimeout = 1500 * time.Millisecond

func newHealthCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Exit 0 when this node may hold the VIP (keepalived's track script), 1 otherwise",
		Long: "health checks that dockerd answers and this node is an active swarm member that sees a manager.\n" +
			"keepalived runs it every 2 s; two failures put the VRRP instance in FAULT, releasing the VIP.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), healthTimeout)
			defer cancel()
			docker, err := dockerClient()
			if err != nil {
				return err
			}
			defer docker.Close()
			return vrrp.Healthy(ctx, docker)
		},
	}
}
