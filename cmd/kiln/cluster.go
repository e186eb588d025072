package main

import (
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/config"
)

func init() { register(newClusterCmd) }

// newClusterCmd is `kiln cluster`: cluster config chores.
func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Create cluster configs (the file nodes read from fw_cfg, the ESP or the image)",
	}
	cmd.AddCommand(newClusterNewCmd())
	return cmd
}

func newClusterNewCmd() *cobra.Command {
	var (
		name, vip, iface string
		size             int
		peers            []string
	)
	cmd := &cobra.Command{
		Use:   "new",
		Short: "Print a fresh cluster config with a random key",
		Long: `Prints a new cluster config (YAML) with a fresh random 32-byte key. Put it on each node's ESP as
kiln/cluster.yaml, pass it to qemu with -fw_cfg name=opt/kiln/config,file=cluster.yaml, or bake it into an
image. The key is the cluster's only secret: whoever holds it can join.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := config.New(name)
			if err != nil {
				return err
			}
			c.Cluster.Size = size
			c.Cluster.Interface = iface
			if vip != "" {
				if c.Cluster.VIP, err = netip.ParsePrefix(vip); err != nil {
					return fmt.Errorf("--vip: %w", err)
				}
			}
			for _, p := range peers {
				a, err := netip.ParseAddr(p)
				if err != nil {
					return fmt.Errorf("--peer: %w", err)
				}
				c.Cluster.Peers = append(c.Cluster.Peers, a)
			}
			if err := c.Validate(); err != nil {
				return err
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
	cmd.Flags().IntVar(&size, "size", config.DefaultSize, "expected number of members")
	cmd.Flags().StringVar(&vip, "vip", "", "floating address with prefix, e.g. 192.168.1.250/24")
	cmd.Flags().StringVar(&iface, "interface", "", "cluster interface (default: the one with the default route)")
	cmd.Flags().StringSliceVar(&peers, "peer", nil, "static peer address (repeatable; for networks without multicast)")
	return cmd
}
