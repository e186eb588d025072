package main

import (
	"errors"
	"io/fs"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/ignite"
)

func newIgniteCmd() *cobra.Command {
	path := ignite.DefaultPath
	root := "/"
	var noSystemd bool
	cmd := &cobra.Command{
		Use:   "ignite",
		Short: "Apply the image's Ignition config (users, files, units) to this boot (kiln-ignite.service)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := newLogger(slog.LevelInfo)
			cfg, err := ignite.Load(path, log)
			if errors.Is(err, fs.ErrNotExist) {
				log.Info("no Ignition config; nothing to apply", "path", path)
				return nil
			}
			if err != nil {
				return err
			}
			opts := ignite.Options{Root: root, Log: log}
			// Only talk to systemd when there are units: a config of users and files must not depend on D-Bus.
			if len(cfg.Systemd.Units) > 0 && !noSystemd {
				sd, err := ignite.NewDBus(ctx)
				if err != nil {
					return err
				}
				defer sd.Close()
				opts.Systemd = sd
			}
			if err := ignite.Apply(ctx, cfg, opts); err != nil {
				return err
			}
			log.Info("Ignition config applied", "path", path, "users", len(cfg.Passwd.Users),
				"files", len(cfg.Storage.Files), "units", len(cfg.Systemd.Units))
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", path, "Ignition config")
	cmd.Flags().StringVar(&root, "root", root, "root to apply to (testing)")
	cmd.Flags().BoolVar(&noSystemd, "no-systemd", false, "write unit files but do not reload, enable or start")
	return cmd
}
