package boottest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/testenv"
)

// TestReproducible rebuilds every stage after packages (base layer, node layer, disk, formats: all the
// code kiln owns) from a warm cache into another directory, and wants the SHA256SUMS of the image under
// test byte for byte. The packages stage is reused, not re-run: what it downloads is Debian's to change.
func TestReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("reproducibility test: skipped with -short")
	}
	if os.Getenv("KILN_E2E") != "1" {
		t.Skip("reproducibility test: set KILN_E2E=1 (rebuilds the image: a minute)")
	}
	img := imagePath(t)
	kiln, err := filepath.Abs(filepath.Join(testenv.BinDir(), "kiln"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(kiln); err != nil {
		t.Fatalf("%v (make build, or set KILN_BIN)", err)
	}
	first := filepath.Dir(img)
	want, err := os.ReadFile(filepath.Join(first, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Spec string `json:"spec"`
	}
	if b, err := os.ReadFile(filepath.Join(first, "manifest.json")); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s/manifest.json: %v", first, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	second := t.TempDir()
	cmd := exec.CommandContext(ctx, kiln, "build", m.Spec, "--rebuild", "base", "--out", second)
	cmd.Dir = "../.."
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	t.Logf("rebuilt base..formats in %s", time.Since(start).Round(time.Second))
	got, err := os.ReadFile(filepath.Join(second, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("rebuild differs:\nfirst (%s):\n%s\nsecond:\n%s\nbuild log:\n%s", first, want, got, out)
	}
	t.Logf("identical:\n%s", got)
}
