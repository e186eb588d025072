package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/pxe"
)

func init() { register(newPXECmd) }

// newPXECmd is `kiln pxe`: netbooting nodes from a pxe build.
func newPXECmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pxe",
		Short: "Netboot nodes from a pxe build (kiln build --format pxe), with no disk to flash",
	}
	cmd.AddCommand(newPXEServeCmd())
	return cmd
}

func newPXEServeCmd() *cobra.Command {
	o := pxe.Options{}
	c := &cobra.Command{
		Use:   "serve --dir OUT/pxe [--config cluster.yaml --allow-mac MAC…] [--interface IF] [--http-port 8080]",
		Short: "proxyDHCP, TFTP and HTTP that netboot nodes on this LAN, beside its own DHCP server",
		Long: `Netboots kiln nodes from the pxe directory of a build on the LAN of --interface (default: the interface
of the default route), next to the LAN's own DHCP server, which keeps handing out the addresses:
  proxyDHCP  UDP 67, 4011     tells PXE clients what to boot, never an address: iPXE gets the script over HTTP,
                              other firmware gets iPXE over TFTP (option 93: 0 undionly.kpxe, 7 and 9 ipxe.efi)
  TFTP       UDP 69           the files of --dir, read-only
  HTTP       TCP --http-port  boot.ipxe (pointed at this server), vmlinuz, initrd.img, the layers, /cluster.yaml
Trust: /cluster.yaml holds the cluster key: only --allow-mac nodes get it, by the MAC the kernel's neighbour table
has for the client's address (stops a wrong machine, not a LAN host forging a MAC); --allow-any: anyone gets it.
Needs root (ports below 1024, binding to the interface). Logs a line per node and file; stops on SIGINT/SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true // from here on, errors are about the machine, not the command line
			o.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			s, err := pxe.Start(cmd.Context(), o)
			if err != nil {
				return err
			}
			return s.Serve(cmd.Context())
		},
	}
	c.Flags().StringVar(&o.Dir, "dir", "out/pxe", "pxe directory of a build (kiln build --format pxe)")
	c.Flags().StringVar(&o.ConfigFile, "config", "", "cluster config served at /cluster.yaml (needs --allow-mac or --allow-any); none: nodes use their image's default")
	c.Flags().StringVar(&o.Interface, "interface", "", "interface on the nodes' LAN (default: the default route's; required where there is none)")
	c.Flags().IntVar(&o.HTTPPort, "http-port", pxe.DefaultHTTPPort, "HTTP port")
	c.Flags().StringArrayVar(&o.AllowMACs, "allow-mac", nil, "MAC address allowed the cluster config (repeatable)")
	c.Flags().BoolVar(&o.AllowAny, "allow-any", false, "serve the cluster config, and the cluster key in it, to any host on the LAN")
	return c
}
