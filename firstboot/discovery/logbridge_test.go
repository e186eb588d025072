package discovery

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLogBridgeLevels: memberlist's probe chatter goes to debug, its errors become warnings, and traffic under
// another key is one warning per address.
func TestLogBridgeLevels(t *testing.T) {
	var out bytes.Buffer
	b := &logBridge{log: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})), warned: newThrottle(time.Minute)}
	for _, line := range []string{
		"[INFO] memberlist: Suspect n2 has failed, no acks received",
		"[ERR] memberlist: Failed fallback TCP ping: timeout 1s: read tcp 10.77.0.12:1->10.77.0.11:7948: i/o timeout",
		"[ERR] memberlist: Failed to push local state: EOF",
		"[ERR] memberlist: No installed keys could decrypt the message from=10.77.0.99:7948",
		"[ERR] memberlist: No installed keys could decrypt the message from=10.77.0.99:7948",
	} {
		b.Write([]byte(line + "\n"))
	}
	got := out.String()
	for _, want := range []string{
		`level=DEBUG msg="Suspect n2 has failed`,
		`level=DEBUG msg="Failed fallback TCP ping`,
		`level=WARN msg="Failed to push local state: EOF"`,
		`level=WARN msg="ignored gossip from a node with another cluster key" from=10.77.0.99:7948`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "another cluster key"); n != 1 {
		t.Errorf("wrong-key warning logged %d times, want once a minute", n)
	}
}
