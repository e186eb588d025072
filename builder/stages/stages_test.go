package stages

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/builder/spec"
)

// TestFormatsOnlyInFormatsStage: the formats a spec lists are an input of the formats stage alone, so adding
// pxe (or dropping qcow2) to a built spec reuses the cached packages, layers and disk. Real stages, the real
// node spec.
func TestFormatsOnlyInFormatsStage(t *testing.T) {
	ctx := context.Background()
	agent := filepath.Join(t.TempDir(), "kiln-firstboot")
	if err := os.WriteFile(agent, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	inputs := func(formats ...string) []map[string]string {
		s, err := spec.Load("../../images/node.yaml")
		if err != nil {
			t.Fatal(err)
		}
		s.Agent = agent
		s.Formats = formats
		var all []map[string]string
		for _, st := range For(s) {
			in, err := st.Inputs(ctx)
			if err != nil {
				t.Fatalf("%s: %v", st.Name(), err)
			}
			all = append(all, in)
		}
		return all
	}
	disk, pxe := inputs("raw", "qcow2"), inputs("raw", "qcow2", "pxe")
	for i, name := range Names {
		same := maps.Equal(disk[i], pxe[i])
		if same != (name != "formats") {
			t.Errorf("%s: inputs equal=%v with and without pxe:\n%v\n%v", name, same, disk[i], pxe[i])
		}
	}
}
