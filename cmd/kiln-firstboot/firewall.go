package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/discovery"
	"github.com/kiln-project/kiln/firstboot/firewall"
)

// firewallBootTimeout bounds the boot step: two nft transactions at most.
const firewallBootTimeout = time.Minute

func newFirewallBootCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "firewall-boot",
		Short: "Load the node's firewall before any service listens (kiln-firewall.service)",
		Long: `Loads table inet kiln: the ruleset the agent last loaded (` + firewall.PersistPath + `), so members reach each
other from the first packet after a reboot, or else the boot rules: ssh, http and https from anyone, the
membership ports (authenticated by the cluster key) from anyone, and every cluster port closed until the agent
knows the members. It fails only when neither loads; glusterd, dockerd and sshd then do not start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), firewallBootTimeout)
			defer cancel()
			log := newLogger(slog.LevelInfo)
			which, err := firewall.Boot(ctx, firewall.HostNFT, firewall.PersistPath, []uint16{discovery.GossipPort, discovery.BeaconPort})
			if which == "" {
				return fmt.Errorf("firewall-boot: %w", err)
			}
			if err != nil {
				log.Warn("firewall: persisted ruleset refused", "err", err)
			}
			log.Info("firewall loaded before services", "ruleset", which)
			return nil
		},
	}
}
