package cli

import (
	"bytes"
	"errors"
	"testing"

	"github.com/spf13/cobra"
)

// A failure the command already put in its --json output exits 1 and adds nothing to stdout; without --json
// it is printed like any error.
func TestShownError(t *testing.T) {
	c := &cobra.Command{Use: "status"}
	c.Flags().Bool("json", false, "")
	err := &ShownError{Err: errors.New("the cluster is not healthy")}
	var out, errOut bytes.Buffer
	if code := Report(c, "kiln", []string{"--json"}, err, &out, &errOut); code != ExitFailure || out.Len() != 0 || errOut.Len() != 0 {
		t.Errorf("--json: exit %d, stdout %q, stderr %q; want 1 and nothing printed", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := Report(c, "kiln", nil, err, &out, &errOut); code != ExitFailure || errOut.String() != "kiln: the cluster is not healthy\n" {
		t.Errorf("text: exit %d, stderr %q", code, errOut.String())
	}
}
