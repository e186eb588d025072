package main

import (
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/internal/cli"
)

func init() { register(newClusterCmd) }

// newClusterCmd is `kiln cluster`: cluster config chores.
func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Create cluster configs and ask a running cluster how it is",
	}
	cmd.AddCommand(newClusterNewCmd(), newClusterStatusCmd(), newClusterRotateKeyCmd())
	return cmd
}

// MinSize is the smallest cluster `kiln cluster new` writes without --force: the replica-3 volume needs three
// bricks, and swarm managers and the election keep a majority through the loss of one node only from three.
const MinSize = 3

func newClusterNewCmd() *cobra.Command {
	var (
		name, vip, iface string
		size             int
		peers            []string
		force            bool
	)
	cmd := &cobra.Command{
		Use:   "new",
		Short: "Print a fresh cluster config with a random key",
		Long: `Prints a new cluster config (YAML) with a fresh random 32-byte key. Put it on each node's ESP as
kiln/cluster.yaml, pass it to qemu with -fw_cfg name=opt/kiln/config,file=cluster.yaml, or bake it into an
image. The key is the cluster's only secret: whoever holds it can join.`,
		Example: `  kiln cluster new --vip 192.168.1.250/24 > cluster.yaml
  kiln cluster new --name garage --size 5 --vip 10.0.0.200/24 --peer 10.0.0.11 --peer 10.0.0.12`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if size < MinSize {
				if !force {
					return cli.Usagef("--size %d: %s; pass --force to write it anyway", size, smallClusterWhy(size))
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "kiln: warning: --size %d: %s\n", size, smallClusterWhy(size))
			}
			c, err := config.New(name)
			if err != nil {
				return err
			}
			c.Cluster.Size = size
			c.Cluster.Interface = iface
			if vip != "" {
				if c.Cluster.VIP, err = config.ParseVIP(vip); err != nil {
					return cli.Usagef("--vip %w", err)
				}
			}
			for _, p := range peers {
				a, err := netip.ParseAddr(p)
				if err != nil {
					return cli.Usagef("--peer %s: want an IP address (names are not resolved at boot)", p)
				}
				c.Cluster.Peers = append(c.Cluster.Peers, a)
			}
			if err := c.Validate(); err != nil {
				return cli.Usagef("%w", err)
			}
			out, err := c.Marshal()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "kiln", "cluster name ([a-z0-9-]{1,32})")
	cmd.Flags().IntVar(&size, "size", config.DefaultSize, fmt.Sprintf("expected number of members (at least %d without --force)", MinSize))
	cmd.Flags().StringVar(&vip, "vip", "", "floating address with its prefix length, e.g. 192.168.1.250/24 (default: none)")
	cmd.Flags().StringVar(&iface, "interface", "", "cluster interface (default: the one with the default route)")
	cmd.Flags().StringSliceVar(&peers, "peer", nil, "static peer address (repeatable; for networks without multicast)")
	cmd.Flags().BoolVar(&force, "force", false, "write a config kiln advises against (a cluster of fewer than 3 nodes)")
	return cmd
}

// smallClusterWhy says what a cluster of size < MinSize gives up.
func smallClusterWhy(size int) string {
	return fmt.Sprintf("a cluster of %d cannot survive losing a node: the replica-3 volume needs 3 bricks, "+
		"and swarm managers and the election need a majority of 3 to keep one through a loss", size)
}
