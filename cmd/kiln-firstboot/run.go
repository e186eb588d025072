package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot"
	"github.com/kiln-project/kiln/firstboot/vrrp"
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
			docker, err := dockerClient()
			if err != nil {
				return err
			}
			defer docker.Close()
			// keepalived's health input, beside the reconcile loop: it must keep ticking while a pass is
			// blocked on a slow gluster or docker call.
			ctx, cancel := context.WithCancel(cmd.Context())
			health := &vrrp.HealthReporter{Docker: docker, Log: log.With("component", "vrrp-health")}
			done := make(chan struct{})
			go func() { defer close(done); health.Run(ctx) }()
			defer func() { cancel(); <-done }()
			// The agent loads config and identity itself (retrying, reporting problems in status.json) and
			// sends sd_notify READY once it is running.
			return firstboot.Run(ctx, firstboot.Options{Logger: log, Reconcilers: reconcilers})
		},
	}
	cmd.Flags().BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}
