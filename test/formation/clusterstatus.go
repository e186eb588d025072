package formation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/kiln-project/kiln/firstboot/clusterhealth"
	"github.com/kiln-project/kiln/internal/testenv"
	"github.com/kiln-project/kiln/lab"
)

// ClusterStatus asks n for the cluster's health as an operator does, with `kiln cluster status --ssh root@<n>
// --json` run on the host inside the lab's namespace with the lab's key. It returns the report and the
// command's exit status (0 healthy, 1 not).
func ClusterStatus(ctx context.Context, l *lab.Lab, n *lab.Node) (*clusterhealth.Report, int, error) {
	addr, err := n.Address()
	if err != nil {
		return nil, 0, err
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.Namespace(), filepath.Join(testenv.BinDir(), "kiln"),
		"cluster", "status", "--ssh", "root@"+addr, "-i", l.KeyPath(),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		return nil, 0, fmt.Errorf("kiln cluster status: %w", err)
	}
	var r clusterhealth.Report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil || r.Node == "" {
		return nil, code, fmt.Errorf("kiln cluster status --ssh %s: exit %d, no report (%v): %s %s", addr, code, err, stdout.String(), stderr.String())
	}
	return &r, code, nil
}
