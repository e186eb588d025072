package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot"
	"github.com/kiln-project/kiln/firstboot/host"
	"github.com/kiln-project/kiln/internal/version"
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
			log.Info("starting", "version", version.Get().String())
			docker, err := host.DockerClient()
			if err != nil {
				return err
			}
			defer docker.Close()
			// The agent loads config and identity itself (retrying, reporting problems in status.json) and
			// sends sd_notify READY once it is running.
			return host.Run(cmd.Context(), host.Machine{Docker: docker}, firstboot.Options{Logger: log})
		},
	}
	cmd.Flags().BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}
