package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/clusterhealth"
	"github.com/kiln-project/kiln/firstboot/gluster"
	"github.com/kiln-project/kiln/firstboot/host"
	"github.com/kiln-project/kiln/firstboot/status"
	"github.com/kiln-project/kiln/internal/cli"
)

func newStatusCmd() *cobra.Command {
	var asJSON, cluster bool
	path := status.DefaultPath
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the agent's view: phase, members, swarm, gluster, VIP holder, last error",
		Long: `Prints the agent's view of this node (its status file). With --cluster it answers for the whole cluster:
members, the swarm's managers and leader, the volume's bricks and pending heals, the VIP holder and the last
error, with a verdict; it exits 1 when the cluster is not healthy (what kiln cluster status --ssh runs).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := status.Read(path)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no status at %s: the agent (kiln-firstboot.service) has not started or not written yet", path)
			}
			if err != nil {
				return err
			}
			if cluster {
				return clusterStatus(cmd.Context(), s, asJSON)
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			return status.Format(os.Stdout, s, time.Now())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status file (with --cluster: the cluster report) as JSON")
	cmd.Flags().BoolVar(&cluster, "cluster", false, "answer for the whole cluster, with a verdict (exit 1 when not healthy)")
	cmd.Flags().StringVar(&path, "path", path, "status file")
	return cmd
}

// clusterHealthTimeout bounds the live queries of --cluster (swarm node list, gluster volume status and heal
// info): a manager without a leader or a glusterd that hangs must not hang the report.
const clusterHealthTimeout = 30 * time.Second

// errUnhealthy is the failure --cluster reports after printing a report that is not healthy.
var errUnhealthy = errors.New("the cluster is not healthy")

func clusterStatus(ctx context.Context, s *status.Status, asJSON bool) error {
	ctx, cancel := context.WithTimeout(ctx, clusterHealthTimeout)
	defer cancel()
	docker, err := host.DockerClient()
	if err != nil {
		return err
	}
	defer docker.Close()
	r := clusterhealth.Collect(ctx, s, docker, gluster.NewCLI(gluster.HostRunner), time.Now())
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		fmt.Print(clusterhealth.Format(r))
	}
	if !r.Healthy {
		return &cli.ShownError{Err: fmt.Errorf("%w: %s", errUnhealthy, strings.Join(r.Problems, "; "))}
	}
	return nil
}
