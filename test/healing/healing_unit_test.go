package healing

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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

func TestLongestGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(secs ...int) []time.Time {
		var out []time.Time
		for _, s := range secs {
			out = append(out, t0.Add(time.Duration(s)*time.Second))
		}
		return out
	}
	tests := []struct {
		name         string
		at           []time.Time
		since, until int
		want         time.Duration
	}{
		{"steady acks", at(0, 1, 2, 3, 4), 0, 4, time.Second},
		{"a stall in the middle", at(0, 1, 9, 10), 0, 10, 8 * time.Second},
		{"instants outside the window are ignored", at(-5, 2, 3, 20), 0, 4, 2 * time.Second},
		{"no ack after the fault: the whole rest of the window", at(0, 1), 0, 30, 29 * time.Second},
		{"no ack at all", nil, 0, 7, 7 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := LongestGap(tc.at, t0.Add(time.Duration(tc.since)*time.Second), t0.Add(time.Duration(tc.until)*time.Second))
			if got != tc.want {
				t.Errorf("LongestGap = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestWaitAckedFailsWhenWriterEnded: a writer whose stream died (ssh could not connect) makes the wait fail at
// once with the reason, instead of polling out its bound for acks that cannot come.
func TestWaitAckedFailsWhenWriterEnded(t *testing.T) {
	w := newWriter("cat /dev/null")
	w.record(0, true)
	w.mu.Lock()
	w.ended, w.endedErr = true, errors.New("exit status 255")
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err := w.WaitAcked(ctx, 5)
	if err == nil || !strings.Contains(err.Error(), "writer ended after 1 acked") || !strings.Contains(err.Error(), "255") {
		t.Fatalf("err %v, want the writer's end named", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s: want an immediate failure", d)
	}
}
