package discovery

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"time"
)

// logBridge turns memberlist's printf lines ("[LEVEL] memberlist: text from=addr") into slog records, and
// recognises the one thing an operator must see: traffic from a node that does not hold our cluster key
// (memberlist drops it when decryption fails). Those are logged as warnings, once a minute per address.
type logBridge struct {
	log *slog.Logger
	// warned throttles the wrong-key warnings per source address.
	warned *throttle
}

var fromAddr = regexp.MustCompile(`from=([^\s]+)`)

func (l *logBridge) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	for prefix, lv := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError} {
		if strings.HasPrefix(line, prefix) {
			level, line = lv, strings.TrimSpace(strings.TrimPrefix(line, prefix))
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	if wrongKey(line) {
		from := ""
		if m := fromAddr.FindStringSubmatch(line); m != nil {
			from = m[1]
		}
		if l.warned.allow(from, time.Now()) {
			l.log.Warn("ignored gossip from a node with another cluster key", "from", from, "detail", line)
		}
		return len(p), nil
	}
	// memberlist reports routine failures (a peer that went away) as [ERR]; for the agent they are warnings.
	if level == slog.LevelError {
		level = slog.LevelWarn
	}
	// Probe chatter is debug: the outcome (member up/down) is logged by the agent once per change, while these
	// lines come several times a second on a loaded host and cost journald a large share of a small node's CPU.
	if probeChatter(line) {
		level = slog.LevelDebug
	}
	l.log.Log(context.Background(), level, line, "component", "memberlist")
	return len(p), nil
}

var chatter = []string{"Suspect ", "Failed fallback", "Was able to connect", "Refuting a suspect", "Marking ", "Failed to send", "Failed ping"}

func probeChatter(line string) bool {
	for _, c := range chatter {
		if strings.HasPrefix(line, c) {
			return true
		}
	}
	return false
}

// wrongKey reports whether a memberlist log line is a decryption failure: "No installed keys could decrypt
// the message" (packets and streams) or plaintext sent to us while encryption is required.
func wrongKey(line string) bool {
	s := strings.ToLower(line)
	return strings.Contains(s, "decrypt") || strings.Contains(s, "not encrypted") || strings.Contains(s, "encryption")
}
