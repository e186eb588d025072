package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/status"
	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/qemu"
)

// labFlags are the flags every `kiln lab` verb shares.
type labFlags struct {
	name string
	root string
}

// newLabCmd is `kiln lab`: boot nodes of a built image as VMs on a private network, and break them on purpose.
func newLabCmd() *cobra.Command {
	f := &labFlags{}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run nodes of a built image as qemu VMs on a private network, with fault verbs",
		Long: `kiln lab boots N nodes of a built image as qemu VMs (OVMF, TCG unless KVM is proven to work) on a private
network inside the network namespace kiln-<name>, and breaks them on purpose: kill, stop, start, powercut,
partition, heal, reimage, replace, add. State lives in ${XDG_STATE_HOME:-~/.local/state}/kiln/lab/<name>/.`,
	}
	cmd.PersistentFlags().StringVar(&f.name, "name", "default", "lab name ([a-z0-9-], namespace kiln-<name>)")
	cmd.PersistentFlags().StringVar(&f.root, "root", "", "directory holding labs (default ${XDG_STATE_HOME:-~/.local/state}/kiln/lab)")
	_ = cmd.RegisterFlagCompletionFunc("name", f.completeLabs)
	cmd.AddCommand(labUpCmd(f), labStatusCmd(f), labListCmd(f), labExecCmd(f), labLogsCmd(f), labDownCmd(f), labAddCmd(f),
		labPowercutCmd(f), labPartitionCmd(f))
	for _, v := range []struct {
		use, short string
		op         func(*lab.Node, context.Context) error
		boots      bool
	}{
		{"kill", "Hard power-off a node (SIGKILL to its qemu)", (*lab.Node).Kill, false},
		{"stop", "ACPI shutdown of a node, waiting (bounded) for it to power off", (*lab.Node).Stop, false},
		{"start", "Power a node on", (*lab.Node).Start, true},
		{"heal", "Restore a partitioned node's link", (*lab.Node).Heal, false},
		{"reimage", "Same hardware, fresh disk from the image (empty /var); starts the node", (*lab.Node).Reimage, true},
		{"replace", "New hardware (MAC, UUID, address) and fresh disk under the same node name; starts it", (*lab.Node).Replace, true},
	} {
		cmd.AddCommand(labNodeVerb(f, v.use, v.short, v.op, v.boots))
	}
	// A failed fault or a node that won't boot is not a usage mistake.
	for _, c := range cmd.Commands() {
		c.SilenceUsage = true
	}
	return cmd
}

func (f *labFlags) open() (*lab.Lab, error) {
	l, err := lab.Open(f.root, f.name, nil)
	if errors.Is(err, lab.ErrNoLab) {
		root := f.root
		if root == "" {
			root = lab.DefaultRoot()
		}
		return nil, fmt.Errorf("no lab named %s in %s (kiln lab list shows the labs, kiln lab up creates one)", f.name, root)
	}
	return l, err
}

// completeLabs offers the names of existing labs for --name.
func (f *labFlags) completeLabs(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	labs, err := lab.List(f.root)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var names []cobra.Completion
	for _, s := range labs {
		names = append(names, s.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// completeNode offers the lab's node names for a NODE argument (the first one only).
func (f *labFlags) completeNode(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveDefault // exec: the remote command is the user's
	}
	l, err := f.open()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	nodes, err := l.Nodes()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var names []cobra.Completion
	for _, n := range nodes {
		names = append(names, n.Name())
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// printJSON writes v as indented JSON, the form of every --json output (docs/cli.md).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// waitFlag adds --wait to a verb that boots nodes.
func waitFlag(c *cobra.Command, d *time.Duration) {
	c.Flags().DurationVar(d, "wait", 15*time.Minute, "wait until booted nodes answer ssh, at most this long (0: don't wait)")
}

func waitNodes(ctx context.Context, out io.Writer, d time.Duration, nodes ...*lab.Node) error {
	if d == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for _, n := range nodes {
		t, err := n.WaitBooted(ctx)
		if err != nil {
			return err
		}
		addr, _ := n.Address()
		fmt.Fprintf(out, "%s booted at %s after %s\n", n.Name(), addr, t.Round(time.Second))
	}
	return nil
}

func labUpCmd(f *labFlags) *cobra.Command {
	o := lab.Options{}
	var config, accel, firmware string
	var wait time.Duration
	c := &cobra.Command{
		Use:   "up --image out/node.raw [--nodes 3] | up --boot pxe --pxe-dir out/pxe --config cluster.yaml",
		Short: "Create a lab: namespace, bridge, DHCP, and N node VMs",
		Long: `Create a lab: a network namespace with a bridge, a DHCP server and N node VMs.

With --boot disk (the default) every node's disk is a copy-on-write overlay of --image. With --boot pxe every
node has blank disks and boots from its NIC: kiln pxe serve runs in the lab's namespace as a proxyDHCP server
beside the lab's plain DHCP server (as a laptop would in a garage), and serves --pxe-dir and the --config to
the nodes' MACs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Name, o.Root, o.Accel, o.Firmware = f.name, f.root, qemu.Accel(accel), qemu.Firmware(firmware)
			if config != "" {
				b, err := os.ReadFile(config)
				if err != nil {
					return fmt.Errorf("lab up: --config: %w", err)
				}
				o.ClusterConfig = b
			}
			start := time.Now()
			l, err := lab.Up(cmd.Context(), o)
			if err != nil && l != nil {
				return fmt.Errorf("%w (kiln lab down --name %s cleans up)", err, f.name)
			}
			if err != nil {
				return err
			}
			nodes, err := l.Nodes()
			if err != nil {
				return err
			}
			if err := waitNodes(cmd.Context(), cmd.OutOrStdout(), wait, nodes...); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %s up with %d nodes in %s (namespace %s)\n", l.Name(), len(nodes),
				time.Since(start).Round(time.Second), l.Namespace())
			return nil
		},
	}
	c.Flags().StringVar(&o.Image, "image", "out/node.raw", "raw node image")
	c.Flags().IntVar(&o.Nodes, "nodes", 3, "number of nodes")
	c.Flags().IntVar(&o.MemoryMiB, "memory", 1536, "memory per node, MiB")
	c.Flags().IntVar(&o.CPUs, "cpus", 1, "vCPUs per node")
	c.Flags().IntVar(&o.DiskGiB, "disk", 8, "disk size per node, GiB (copy-on-write over the image)")
	c.Flags().IntVar(&o.DataDiskGiB, "data-disk", 0, "a second, blank disk per node, GiB (the node puts its gluster brick there); 0: none")
	c.Flags().StringVar(&config, "config", "", "cluster config file (its cluster section reaches every node via fw_cfg, or with --boot pxe from kiln pxe serve)")
	c.Flags().StringVar(&o.Boot, "boot", lab.BootDisk, "how nodes boot: disk (an overlay of --image) or pxe (blank disks, from the network)")
	c.Flags().StringVar(&o.PXEDir, "pxe-dir", "out/pxe", "with --boot pxe: the pxe directory of a build (kiln build --format pxe)")
	c.Flags().StringVar(&firmware, "firmware", string(qemu.FirmwareUEFI), "uefi (OVMF) or bios (SeaBIOS; only with --boot pxe)")
	c.Flags().StringVar(&accel, "accel", os.Getenv("KILN_LAB_ACCEL"), "tcg or kvm (default: probe KVM, fall back to tcg; env KILN_LAB_ACCEL)")
	waitFlag(c, &wait)
	fixed := func(flag string, values ...string) {
		_ = c.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
	}
	fixed("boot", lab.BootDisk, lab.BootPXE)
	fixed("firmware", string(qemu.FirmwareUEFI), string(qemu.FirmwareBIOS))
	fixed("accel", string(qemu.AccelTCG), string(qemu.AccelKVM))
	_ = c.RegisterFlagCompletionFunc("image", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return []cobra.Completion{"raw"}, cobra.ShellCompDirectiveFilterFileExt
	})
	_ = c.RegisterFlagCompletionFunc("pxe-dir", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveFilterDirs
	})
	return c
}

func labStatusCmd(f *labFlags) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status [--json]",
		Short: "Power state, address, boot and agent status of every node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := f.open()
			if err != nil {
				return err
			}
			st, err := l.Status(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tPOWER\tADDRESS\tMAC\tBOOTED\tPARTITION\tAGENT")
			for _, s := range st {
				agent := s.AgentError
				var st status.Status
				if s.Agent != nil {
					if err := json.Unmarshal(s.Agent, &st); err != nil {
						agent = "undecodable status: " + err.Error()
					} else {
						agent = st.Summary()
					}
				}
				part := s.Partition
				if part == "" {
					part = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\t%s\t%s\n", s.Name, s.Power, s.Address, s.MAC, s.Booted, part, agent)
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func labListCmd(f *labFlags) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list [--json]",
		Short: "The labs in the state directory: nodes, which are running, how they boot",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			labs, err := lab.List(f.root)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), labs)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "LAB\tNODES\tRUNNING\tBOOT\tCREATED\tIMAGE")
			for _, s := range labs {
				if s.Error != "" {
					fmt.Fprintf(w, "%s\t-\t-\t-\t-\t%s\n", s.Name, s.Error)
					continue
				}
				image := s.Image
				if image == "" {
					image = "-"
				}
				fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%s\n", s.Name, len(s.Nodes), len(s.Running), s.Boot,
					s.CreatedAt.Local().Format(time.DateTime), image)
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func labExecCmd(f *labFlags) *cobra.Command {
	var stdin bool
	c := &cobra.Command{
		Use:               "exec NODE -- CMD [ARG...]",
		ValidArgsFunction: f.completeNode,
		Short:             "Run a command in a node over ssh; exits with its exit code",
		Long: `Run a command in a node as root over ssh, from the lab's namespace with the lab's key. Its output and
error output stream as they come; kiln exits with its exit code. No terminal is allocated: for an interactive
shell, ssh in yourself (docs/lab.md).`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := openNode(f, args[0])
			if err != nil {
				return err
			}
			o := lab.ExecOptions{Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr()}
			if stdin {
				o.Stdin = cmd.InOrStdin()
			}
			res, err := n.ExecWith(cmd.Context(), o, args[1:]...)
			if err != nil {
				return err
			}
			if res.ExitCode != 0 {
				os.Exit(res.ExitCode) // the remote command's code is the answer, not a kiln error
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&stdin, "stdin", "i", false, "pass kiln's stdin to CMD (e.g. kiln lab exec -i node1 -- docker load < image.tar)")
	return c
}

func labLogsCmd(f *labFlags) *cobra.Command {
	var tail int
	c := &cobra.Command{
		Use:               "logs NODE",
		ValidArgsFunction: f.completeNode,
		Short:             "Print a node's serial console log",
		Args:              cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := openNode(f, args[0])
			if err != nil {
				return err
			}
			if tail > 0 {
				fmt.Fprintln(cmd.OutOrStdout(), n.SerialTail(tail))
				return nil
			}
			fh, err := os.Open(n.SerialLog())
			if err != nil {
				return err
			}
			defer fh.Close()
			_, err = io.Copy(cmd.OutOrStdout(), fh)
			return err
		},
	}
	c.Flags().IntVar(&tail, "tail", 0, "only the last N lines")
	return c
}

func labDownCmd(f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop everything and remove the lab (namespace, taps, processes, files); idempotent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Down(cmd.Context(), f.root, f.name)
		},
	}
}

func labAddCmd(f *labFlags) *cobra.Command {
	var wait time.Duration
	c := &cobra.Command{
		Use:   "add",
		Short: "Add one more node on new hardware",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := f.open()
			if err != nil {
				return err
			}
			n, err := l.Add(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added %s\n", n.Name())
			return waitNodes(cmd.Context(), cmd.OutOrStdout(), wait, n)
		},
	}
	waitFlag(c, &wait)
	return c
}

func labPowercutCmd(f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "powercut",
		Short: "Hard power-off every node at once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := f.open()
			if err != nil {
				return err
			}
			return l.PowerCut(cmd.Context())
		},
	}
}

func labPartitionCmd(f *labFlags) *cobra.Command {
	var peersOnly bool
	c := &cobra.Command{
		Use:               "partition NODE [--peers-only]",
		ValidArgsFunction: f.completeNode,
		Short:             "Cut a node's link (from everyone, or with --peers-only from the other nodes only)",
		Args:              cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := openNode(f, args[0])
			if err != nil {
				return err
			}
			return n.Partition(cmd.Context(), peersOnly)
		},
	}
	c.Flags().BoolVar(&peersOnly, "peers-only", false, "keep the lab host's access to the node")
	return c
}

func labNodeVerb(f *labFlags, use, short string, op func(*lab.Node, context.Context) error, boots bool) *cobra.Command {
	var wait time.Duration
	c := &cobra.Command{
		Use:               use + " NODE",
		ValidArgsFunction: f.completeNode,
		Short:             short,
		Args:              cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := openNode(f, args[0])
			if err != nil {
				return err
			}
			if err := op(n, cmd.Context()); err != nil {
				return err
			}
			if boots {
				return waitNodes(cmd.Context(), cmd.OutOrStdout(), wait, n)
			}
			return nil
		},
	}
	if boots {
		waitFlag(c, &wait)
	}
	return c
}

func openNode(f *labFlags, name string) (*lab.Node, error) {
	l, err := f.open()
	if err != nil {
		return nil, err
	}
	return l.Node(name)
}
