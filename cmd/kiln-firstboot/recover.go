package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot"
	"github.com/kiln-project/kiln/firstboot/gluster"
	"github.com/kiln-project/kiln/firstboot/identity"
	"github.com/kiln-project/kiln/firstboot/sdunit"
	kswarm "github.com/kiln-project/kiln/firstboot/swarm"
)

// agentUnit is the agent's service; recover stops it so it does not act on (or rewrite) the old formation
// record while the cluster is being recovered underneath it.
const agentUnit = "kiln-firstboot.service"

func newRecoverCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "recover --force-new-cluster",
		Short: "Restore service on this node after the majority of the cluster is lost for good",
		Long: "recover makes this node the whole cluster again when two of three (a majority) are gone for good and\n" +
			"the swarm has no quorum. It refuses while the swarm has a leader. Steps: stop the agent; docker swarm\n" +
			"init --force-new-cluster; demote and remove every other swarm node; shrink the gluster volume to this\n" +
			"node's brick (quorums off, remove-brick replica 1 … force, peer detach … force); start a new epoch in\n" +
			"the formation record; start the agent. New nodes then join and grow the cluster back to its size;\n" +
			"old nodes that return see the newer epoch and start over as fresh nodes (their brick is set aside).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				return errors.New("recover changes the cluster for good: pass --force-new-cluster if the majority is lost for good")
			}
			return recoverCluster(cmd.Context(), newLogger(slog.LevelInfo))
		},
	}
	cmd.Flags().BoolVar(&force, "force-new-cluster", false, "make this node the cluster (the lost members are removed)")
	return cmd
}

func recoverCluster(ctx context.Context, log *slog.Logger) error {
	docker, err := dockerClient()
	if err != nil {
		return err
	}
	defer docker.Close()
	info, err := docker.Info(ctx)
	if err != nil {
		return fmt.Errorf("recover: docker: %w", err)
	}
	sw := info.Swarm
	if sw.LocalNodeState != swarm.LocalNodeStateActive || !sw.ControlAvailable {
		return fmt.Errorf("recover: this node is not an active swarm manager (state %s): recover on a surviving manager", sw.LocalNodeState)
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, qerr := docker.NodeList(qctx, swarm.NodeListOptions{})
	cancel()
	if qerr == nil {
		return errors.New("recover: the swarm has a leader (quorum holds): nothing to recover; the agent heals the rest")
	}
	addr, err := netip.ParseAddr(sw.NodeAddr)
	if err != nil {
		return fmt.Errorf("recover: swarm node address %q: %w", sw.NodeAddr, err)
	}
	id, err := identity.Get(identity.Options{Log: log})
	if err != nil {
		return fmt.Errorf("recover: identity: %w", err)
	}
	systemd, err := sdunit.Connect(ctx)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	defer systemd.Close()

	log.Warn("recover: stopping the agent", "reason", "operator: recover --force-new-cluster", "swarm_error", qerr)
	if err := systemd.Stop(ctx, agentUnit); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	// Whatever happens next, the agent runs again: it reports what is left to do.
	defer func() {
		if err := systemd.Start(context.WithoutCancel(ctx), agentUnit); err != nil {
			log.Error("recover: start the agent again", "err", err)
		}
	}()

	listen, err := kswarm.ForceNewCluster(ctx, docker, addr, log)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}

	g := gluster.New(gluster.NewCLI(gluster.HostRunner), systemd, "", log)
	if err := g.Recover(ctx, addr); err != nil {
		return fmt.Errorf("recover: %w", err)
	}

	epoch, err := firstboot.NewEpoch("/var/lib/kiln", id.ID, listen, time.Now())
	if err != nil {
		return fmt.Errorf("recover: formation record: %w", err)
	}
	log.Warn("recover: done; new nodes grow the cluster back, returning old nodes start over", "epoch", epoch)
	fmt.Printf("recovered: this node is the cluster (epoch %d); add nodes or bring others back to grow it to its size\n", epoch)
	return nil
}
