package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/status"
)

func newStatusCmd() *cobra.Command {
	var asJSON bool
	path := status.DefaultPath
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the agent's view: phase, members, swarm, gluster, VIP holder, last error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := status.Read(path)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no status at %s: the agent (kiln-firstboot.service) has not started or not written yet", path)
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			return status.Format(os.Stdout, s, time.Now())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status file as JSON")
	cmd.Flags().StringVar(&path, "path", path, "status file")
	return cmd
}
