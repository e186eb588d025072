// Command kiln builds immutable node images (kiln build), runs them as VMs (kiln lab) and manages clusters.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/internal/cli"
)

// commands are kiln's subcommands. A file adding one either appends here or calls register from its init;
// the explicit list is preferred (what runs is visible in one place).
var commands = []func() *cobra.Command{
	newBuildCmd,
	newLabCmd,
	newVersionCmd,
	newPublishCmd,
}

func newVersionCmd() *cobra.Command { return cli.NewVersionCmd("kiln", nil) }

// register adds a subcommand constructor; for files that cannot edit the list above.
func register(c func() *cobra.Command) { commands = append(commands, c) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "kiln",
		Short: "Build immutable, UEFI-bootable cluster node images and run them",
		Long: `kiln turns a declarative image spec (images/*.yaml) into immutable, bootable node images in cached
stages, boots them as a lab of VMs, and forms them into a self-managing cluster.`,
	}
	for _, c := range commands {
		root.AddCommand(c())
	}
	cli.Prepare(root) // exit codes, error output and --version as docs/cli.md says
	return root
}

func main() {
	// The first SIGINT/SIGTERM cancels ctx: the build stops, removes its temp files and leaves outputs as they
	// were. stop() then restores the default, so a second Ctrl-C kills at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	c, err := newRootCmd().ExecuteContextC(ctx)
	stop()
	if errors.Is(err, context.Canceled) {
		err = fmt.Errorf("interrupted; outputs left as they were: %w", err)
	}
	os.Exit(cli.Report(c, "kiln", os.Args[1:], err, os.Stdout, os.Stderr))
}
