package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/firstboot/ignite"
)

// sshKeysTimeout bounds one lookup: sshd waits for it on every login.
const sshKeysTimeout = 5 * time.Second

func newSSHKeysCmd() *cobra.Command {
	root := "/"
	cmd := &cobra.Command{
		Use:   "ssh-keys USER",
		Short: "Print USER's authorized ssh keys (sshd AuthorizedKeysCommand)",
		Long: `Prints the authorized keys of USER: for root the node config's ssh_authorized_keys (also when its cluster
section is missing or invalid), and for every user the sshAuthorizedKeys of the image's Ignition config. It never fails: a missing or broken source means fewer keys,
and an unknown user gets none (sshd then falls back to its other methods).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), sshKeysTimeout)
			defer cancel()
			log := newLogger(slog.LevelWarn)
			for _, k := range authorizedKeys(ctx, root, args[0], log) {
				fmt.Println(k)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&root, "root", root, "root to read sources under (testing)")
	return cmd
}

// authorizedKeys collects the keys for user, de-duplicated in source order. Problems are logged, not returned.
func authorizedKeys(ctx context.Context, root, user string, log *slog.Logger) []string {
	var keys []string
	if user == "root" {
		// Not config.Load: a config without a valid cluster section still grants its keys, so a person can
		// log in to a node that is waiting for (or refusing) its cluster config.
		ks, err := config.SSHKeys(ctx, config.Sources(root, log))
		if err != nil {
			log.Warn("ssh-keys: no keys from the node config", "err", err)
		}
		keys = append(keys, ks...)
	}
	keys = append(keys, ignitionKeys(filepath.Join(root, ignite.DefaultPath), user, log)...)
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		k = strings.TrimSpace(k)
		// One key per line: a key with a newline would add lines sshd reads as further keys.
		if k == "" || strings.ContainsAny(k, "\r\n") || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, k)
	}
	return out
}

// ignitionKeys reads only passwd.users[].sshAuthorizedKeys, leniently: a config that ignite rejects for some
// unrelated field must not lock its users out of ssh.
func ignitionKeys(path, user string, log *slog.Logger) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		if !os.IsNotExist(err) {
			log.Warn("ssh-keys: read Ignition config", "path", path, "err", err)
		}
		return nil
	}
	var cfg struct {
		Passwd struct {
			Users []struct {
				Name              string   `json:"name"`
				SSHAuthorizedKeys []string `json:"sshAuthorizedKeys"`
			} `json:"users"`
		} `json:"passwd"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		log.Warn("ssh-keys: parse Ignition config", "path", path, "err", err)
		return nil
	}
	var keys []string
	for _, u := range cfg.Passwd.Users {
		if u.Name == user {
			keys = append(keys, u.SSHAuthorizedKeys...)
		}
	}
	return keys
}
