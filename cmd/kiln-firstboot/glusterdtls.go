package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot"
	"github.com/kiln-project/kiln/firstboot/glustertls"
)

func newGlusterdTLSCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "glusterd-tls",
		Short: "Set glusterd's TLS switch from the formation record before glusterd starts (glusterd.service ExecStartPre)",
		Long: `Writes ` + glustertls.SecureAccessFile + ` (management TLS) unless the formation record is of a cluster
formed without a storage CA, and removes it then. It never fails glusterd's start: a record it cannot read leaves
the switch as it is, and the agent puts it right (docs/security.md, "Storage TLS").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(slog.LevelInfo)
			want, err := firstboot.StorageTLSWanted(firstboot.Options{}.StateDirOrDefault())
			if err != nil {
				log.Warn("glusterd-tls: switch left as it is", "err", err, "enabled", glustertls.Enabled("/"))
				return nil
			}
			if want == glustertls.Enabled("/") {
				return nil
			}
			if want {
				err = glustertls.Enable("/")
			} else {
				err = glustertls.Disable("/")
			}
			if err != nil {
				log.Warn("glusterd-tls: switch left as it is", "err", err)
				return nil
			}
			log.Info("glusterd-tls: switch set", "tls", want)
			return nil
		},
	}
}
