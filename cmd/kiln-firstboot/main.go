// Command kiln-firstboot is the node agent baked into every kiln image: it applies the node's identity and
// Ignition config at boot, serves ssh keys to sshd, and runs the agent that forms and keeps the cluster.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/journallog"
)

// commands are the subcommands, in help order.
var commands = []func() *cobra.Command{
	newRunCmd,
	newStatusCmd,
	newIdentityCmd,
	newBrickDiskCmd,
	newIgniteCmd,
	newSSHKeysCmd,
	newHealthCmd,
	newRecoverCmd,
	newVersionCmd,
}

// identifier is the journal's SYSLOG_IDENTIFIER for everything this binary logs.
const identifier = "kiln-firstboot"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "kiln-firstboot",
		Short:         "kiln node agent: identity, Ignition, ssh keys and cluster formation",
		SilenceErrors: true, // main prints the error once
		SilenceUsage:  true, // a runtime failure is not a usage mistake
	}
	for _, c := range commands {
		root.AddCommand(c())
	}
	return root
}

// newLogger logs to the journal when run as a service, to stderr otherwise (see journallog.New).
func newLogger(level slog.Level) *slog.Logger {
	return journallog.New(identifier, level)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kiln-firstboot:", err)
		os.Exit(1)
	}
}
