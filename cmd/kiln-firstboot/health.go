package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/host"
	"github.com/kiln-project/kiln/firstboot/vrrp"
)

func newHealthCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Exit 0 when this node may hold the VIP, 1 otherwise (the check the agent feeds keepalived)",
		Long: "health checks that dockerd answers and this node is an active swarm member that sees a manager.\n" +
			"The running agent makes the same check every 2 s and writes the verdict to " + vrrp.HealthFile + ",\n" +
			"which keepalived tracks: a non-zero value puts the VRRP instance in FAULT, releasing the VIP.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), vrrp.HealthTimeout)
			defer cancel()
			docker, err := host.DockerClient()
			if err != nil {
				return err
			}
			defer docker.Close()
			return vrrp.Healthy(ctx, docker)
		},
	}
}
