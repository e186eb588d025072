package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/host"
	"github.com/kiln-project/kiln/firstboot/recovery"
)

func newRecoverCmd() *cobra.Command {
	var force bool
	var lost []string
	cmd := &cobra.Command{
		Use:   "recover --force-new-cluster --lost NODE[,NODE…]",
		Short: "Restore service on this node after the majority of the cluster is lost for good",
		Long: "recover makes this node the whole cluster again when two of three (a majority) are gone for good and\n" +
			"the swarm has no quorum. Name every other member with --lost (node id or hostname, as `kiln-firstboot\n" +
			"status` lists them): it refuses unless each has been gone for 10 minutes as this node's agent sees it,\n" +
			"and while the swarm has a leader. Steps: stop the agent; docker swarm\n" +
			"init --force-new-cluster; demote and remove every other swarm node; shrink the gluster volume to this\n" +
			"node's brick (quorums off, remove-brick replica 1 … force, peer detach … force); start a new epoch in\n" +
			"the formation record; start the agent. New nodes then join and grow the cluster back to its size;\n" +
			"old nodes that return see the newer epoch and start over as fresh nodes (their brick is set aside).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				return errors.New("recover changes the cluster for good: pass --force-new-cluster if the majority is lost for good")
			}
			return recoverCluster(cmd.Context(), lost, newLogger(slog.LevelInfo))
		},
	}
	cmd.Flags().BoolVar(&force, "force-new-cluster", false, "make this node the cluster (the lost members are removed)")
	cmd.Flags().StringSliceVar(&lost, "lost", nil, "the members lost for good (node id or hostname; repeat or comma-separate): every member but this node")
	return cmd
}

func recoverCluster(ctx context.Context, lost []string, log *slog.Logger) error {
	docker, err := host.DockerClient()
	if err != nil {
		return err
	}
	defer docker.Close()
	node, closeNode, err := recovery.Host(ctx, docker, "/var/lib/kiln", log)
	if err != nil {
		return err
	}
	defer closeNode()
	epoch, err := recovery.Run(ctx, node, lost, log)
	if err != nil {
		return err
	}
	fmt.Printf("recovered: this node is the cluster (epoch %d); add nodes or bring others back to grow it to its size\n", epoch)
	return nil
}
