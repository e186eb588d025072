package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/internal/cli"
	"github.com/kiln-project/kiln/internal/files"
)

// rotationSteps are the configs of a key rotation, in the order they go to every node (docs/security.md).
var rotationSteps = []struct{ file, what string }{
	{"1-accept.yaml", "every node still sends with the old key and now also accepts the new one"},
	{"2-switch.yaml", "every node sends with the new key and still accepts the old one"},
	{"3-final.yaml", "the old key is gone"},
}

func newClusterRotateKeyCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "rotate-key CONFIG --out DIR",
		Short: "Write the three configs that move a running cluster to a new key without a gap",
		Long: `Reads the cluster's config, makes a new random key and writes three configs to DIR:

  1-accept.yaml  key: old, accept_keys: [new]
  2-switch.yaml  key: new, accept_keys: [old]
  3-final.yaml   key: new

Roll each one out to every node (where the node reads its config: the ESP's kiln/cluster.yaml, kiln pxe
serve's --config, EC2 user-data), restarting kiln-firstboot.service on each, and finish a step on every node
before the next: in step 1 no node sends with a key another cannot read yet, in step 2 none refuses the old one
a slower node still sends. Nodes whose config is baked into their image need a rebuilt image for each step.
The files hold the keys: they are written 0600, and DIR must not hold them already.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return cli.Usagef("--out: name the directory for the three configs")
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			cur, err := config.ParseFile(args[0], data)
			if err != nil {
				return err
			}
			if len(cur.Cluster.AcceptKeys) > 0 {
				return fmt.Errorf("%s: already accepts other keys (a rotation under way?): finish it first", args[0])
			}
			var next config.Key
			if _, err := rand.Read(next[:]); err != nil {
				return fmt.Errorf("random key: %w", err)
			}
			old := cur.Cluster.Key
			steps := []struct {
				key    config.Key
				accept []config.Key
			}{{old, []config.Key{next}}, {next, []config.Key{old}}, {next, nil}}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			for i, st := range steps {
				path := filepath.Join(out, rotationSteps[i].file)
				if _, err := os.Stat(path); err == nil {
					return fmt.Errorf("%s exists: a rotation's configs are written once, into an empty directory", path)
				}
				c := *cur
				c.Cluster.Key, c.Cluster.AcceptKeys = st.key, st.accept
				b, err := c.Marshal()
				if err != nil {
					return err
				}
				if _, err := config.Parse(b); err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				if err := files.Write(path, b, 0o600); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", path, rotationSteps[i].what)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "roll out each file to every node (then restart kiln-firstboot there) before the next")
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory for the three configs (created 0700)")
	return cmd
}
