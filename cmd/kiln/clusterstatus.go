package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/clusterhealth"
	"github.com/kiln-project/kiln/internal/cli"
)

// clusterStatusTimeout bounds the whole call: ssh's connect plus the node's own bounded queries.
const clusterStatusTimeout = 90 * time.Second

func newClusterStatusCmd() *cobra.Command {
	var (
		target, identity string
		sshOpts          []string
		asJSON           bool
	)
	cmd := &cobra.Command{
		Use:   "status --ssh root@NODE",
		Short: "Ask one node for the whole cluster's health; exit 1 when it is not healthy",
		Long: `Runs kiln-firstboot status --cluster on one node over ssh (your ssh config, agent and known hosts apply)
and prints its answer: members and their state, the swarm's managers and leader, the volume's bricks and
pending heals, the VIP holder and the node's last error, with a verdict. Exits 0 when the cluster is healthy
and 1 when it is not or the node cannot be asked, so scripts and monitoring can use it. Any node answers for
all; ask another when that one is down.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if target == "" {
				return cli.Usagef("--ssh: name the node to ask, e.g. --ssh root@10.77.0.11")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), clusterStatusTimeout)
			defer cancel()
			r, err := askCluster(ctx, target, identity, sshOpts)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				fmt.Fprint(cmd.OutOrStdout(), clusterhealth.Format(r))
			}
			if !r.Healthy {
				return &cli.ShownError{Err: fmt.Errorf("cluster %s is not healthy (%d problems, as %s sees it)", r.Cluster, len(r.Problems), r.Node)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&target, "ssh", "", "the node to ask, as ssh takes it ([user@]host)")
	cmd.Flags().StringVarP(&identity, "identity", "i", "", "ssh private key (ssh -i)")
	cmd.Flags().StringArrayVarP(&sshOpts, "ssh-option", "o", nil, "an ssh -o option, e.g. -o StrictHostKeyChecking=accept-new (repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON (docs/cli.md)")
	return cmd
}

// askCluster runs the node's report over ssh. The node exits 1 for an unhealthy cluster and still prints the
// report, so the report on stdout decides, and ssh's own failures (exit 255) are told apart.
//
// This is the operator's own ssh(1), on purpose, unlike the lab's in-process client (docs/lab.md): it reaches
// a real node, so the operator's config, agent, known hosts and jump hosts must apply, and host keys are checked.
func askCluster(ctx context.Context, target, identity string, sshOpts []string) (*clusterhealth.Report, error) {
	args := []string{"-o", "BatchMode=yes", "-o", "ConnectTimeout=10"}
	for _, o := range sshOpts {
		args = append(args, "-o", o)
	}
	if identity != "" {
		args = append(args, "-i", identity)
	}
	args = append(args, target, "kiln-firstboot", "status", "--cluster", "--json")
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() == 255:
		return nil, fmt.Errorf("ssh %s: cannot reach or log in: %s", target, strings.TrimSpace(stderr.String()))
	case err != nil && !errors.As(err, &ee):
		return nil, fmt.Errorf("ssh %s: %w", target, err)
	}
	var r clusterhealth.Report
	if derr := json.Unmarshal(stdout.Bytes(), &r); derr != nil || r.Node == "" {
		msg := strings.TrimSpace(stderr.String() + " " + stdout.String())
		return nil, fmt.Errorf("%s: no cluster report from kiln-firstboot status --cluster (%v): %s", target, err, msg)
	}
	return &r, nil
}
