package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/kiln-project/kiln/firstboot/identity"
)

// nicWait bounds how long `identity --apply` waits for a NIC driver when the SMBIOS UUID is unusable: udev
// coldplug loads it in parallel with early boot, and a virtio NIC appears within a second or two.
const nicWait = 30 * time.Second

func newIdentityCmd() *cobra.Command {
	var apply, asJSON bool
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Print this node's id and hostname; --apply persists the id and sets the hostname (kiln-identity.service)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(slog.LevelInfo)
			opts := identity.Options{Log: log}
			if apply {
				opts.Persist, opts.WaitNIC = true, nicWait
			}
			id, err := identity.Get(opts)
			if err != nil {
				return err
			}
			if apply {
				if err := unix.Sethostname([]byte(id.Hostname)); err != nil {
					return fmt.Errorf("identity: sethostname %s: %w", id.Hostname, err)
				}
				if err := identity.WriteHostFiles("/", id.Hostname); err != nil {
					return err
				}
				log.Info("identity applied", "id", id.ID, "hostname", id.Hostname, "source", string(id.Source))
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(identityJSON{ID: id.ID, Hostname: id.Hostname,
					Source: string(id.Source), Previous: id.Previous})
			}
			fmt.Printf("%s %s (from %s)\n", id.ID, id.Hostname, id.Source)
			return nil
		},
	}
	cmd.Flags().BoolVar(&apply, "apply", false, "persist the id, set the hostname, write /etc/hostname and /etc/hosts")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// identityJSON is `identity --json` (docs/cli.md).
type identityJSON struct {
	ID       string `json:"id"`
	Hostname string `json:"hostname"`
	// Source is where the id came from (identity.Source: dmi, mac, persisted, random …).
	Source string `json:"source"`
	// Previous is the persisted id when the hardware's differs; omitted otherwise.
	Previous string `json:"previous,omitempty"`
}
