package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/host"
	"github.com/kiln-project/kiln/firstboot/preload"
)

func newPreloadCmd() *cobra.Command {
	dir := preload.Dir
	cmd := &cobra.Command{
		Use:   "preload",
		Short: "Load the image's preloaded container images into dockerd, skipping those already present",
		Long: "preload reads " + preload.Dir + "/" + preload.IndexFile + " (written by kiln build for a spec with preload:)\n" +
			"and runs `docker load` on every archive whose image is not in dockerd under its name and digest.\n" +
			"kiln-preload.service runs it at every boot; running it again changes nothing.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			docker, err := host.DockerClient()
			if err != nil {
				return err
			}
			defer docker.Close()
			log := newLogger(slog.LevelInfo)
			n, err := preload.Load(cmd.Context(), docker, dir, log)
			if err != nil {
				return err
			}
			log.Info("preloaded images present", "archives_loaded", n)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", dir, "directory holding "+preload.IndexFile+" and the archives")
	return cmd
}
