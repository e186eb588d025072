// Command kiln-firstboot is the node agent baked into every kiln image: it applies the node's identity and
// Ignition config at boot, serves ssh keys to sshd, and runs the agent that forms and keeps the cluster.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/journallog"
	"github.com/kiln-project/kiln/internal/cli"
)

// commands are the subcommands, in help order.
var commands = []func() *cobra.Command{
	newRunCmd,
	newStatusCmd,
	newIdentityCmd,
	newBrickDiskCmd,
	newGlusterdTLSCmd,
	newFirewallBootCmd,
	newIgniteCmd,
	newPreloadCmd,
	newSSHKeysCmd,
	newHealthCmd,
	newRecoverCmd,
	newVersionCmd,
}

// identifier is the journal's SYSLOG_IDENTIFIER for everything this binary logs.
const identifier = "kiln-firstboot"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "kiln-firstboot",
		Short: "kiln node agent: identity, Ignition, ssh keys and cluster formation",
	}
	for _, c := range commands {
		root.AddCommand(c())
	}
	cli.Prepare(root) // exit codes, error output and --version as docs/cli.md says
	return root
}

// newLogger logs to the journal when run as a service, to stderr otherwise (see journallog.New).
func newLogger(level slog.Level) *slog.Logger {
	return journallog.New(identifier, level)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	c, err := newRootCmd().ExecuteContextC(ctx)
	stop()
	os.Exit(cli.Report(c, identifier, os.Args[1:], err, os.Stdout, os.Stderr))
}
