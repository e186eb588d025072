package healing

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/internal/run"
)

// TestWriterScriptAndVerify runs the writer's shell script for real (locally, into a temp dir) and checks that
// Verify accepts exactly what it acknowledged, and catches a lost and a corrupted record.
func TestWriterScriptAndVerify(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sub", "w.log")
	out, err := run.Cmd(context.Background(), "sh", "-c", WriterScript(file, 20, 0))
	if err != nil {
		t.Fatal(err)
	}
	acked := map[int]bool{}
	for line := range strings.Lines(string(out)) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "ack "); ok {
			n, _ := strconv.Atoi(s)
			acked[n] = true
		}
	}
	if len(acked) != 20 || !strings.HasSuffix(strings.TrimSpace(string(out)), "done") {
		t.Fatalf("writer acked %d of 20: %s", len(acked), out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if lost, corrupt := Verify(string(b), acked); len(lost) != 0 || len(corrupt) != 0 {
		t.Fatalf("intact log: lost %v corrupt %v", lost, corrupt)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	// Lose record 3, corrupt record 5 (payload changed, checksum kept), tear the last line.
	f := strings.Fields(lines[5])
	lines[5] = f[0] + " " + strings.Repeat("0", 24) + " " + f[2]
	damaged := strings.Join(append(append(lines[:3:3], lines[4:19]...), lines[19][:10]), "\n")
	lost, corrupt := Verify(damaged, acked)
	if len(corrupt) != 1 || !containsAll(lost, 3, 5, 19) {
		t.Fatalf("damaged log: lost %v corrupt %v; want 3, 5, 19 lost and one corrupt line", lost, corrupt)
	}
}

func containsAll(xs []int, want ...int) bool {
	m := map[int]bool{}
	for _, x := range xs {
		m[x] = true
	}
	for _, w := range want {
		if !m[w] {
			return false
		}
	}
	return len(xs) == len(want)
}

func TestCountEntries(t *testing.T) {
	info := "Brick 10.77.0.11:/b\nStatus: Connected\nNumber of entries: 3\n\nBrick 10.77.0.12:/b\nStatus: Transport endpoint is not connected\nNumber of entries: -\n\nBrick 10.77.0.13:/b\nStatus: Connected\nNumber of entries: 1\n"
	if n, unknown := CountEntries(info); n != 4 || !unknown {
		t.Errorf("CountEntries = %d, %v; want 4, true", n, unknown)
	}
	sb := "Brick a:/b\nStatus: Connected\nNumber of entries in split-brain: 0\n\nBrick b:/b\nStatus: Connected\nNumber of entries in split-brain: 2\n"
	if n, unknown := CountEntries(sb); n != 2 || unknown {
		t.Errorf("split-brain CountEntries = %d, %v", n, unknown)
	}
}
