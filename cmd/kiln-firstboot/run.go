package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot"
)

func newRunCmd() *cobra.Command {
	var debug bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the node agent (kiln-firstboot.service): discover peers, form the cluster, keep reconciling",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			log := newLogger(level)
			log.Info("starting", "version", versionString())
			// The agent loads config and identity itself (retrying, reporting problems in status.json) and
			// sends sd_notify READY once it is running.
			return firstboot.Run(cmd.Context(), firstboot.Options{Logger: log, Reconcilers: reconcilers})
		},
	}
	cmd.Flags().BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}
