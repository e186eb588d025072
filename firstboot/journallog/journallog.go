// Package journallog is a log/slog handler for programs run by systemd: records go to the journal with their
// attributes as journal fields (so `journalctl -o verbose NODE=…` filters on them), and to stderr when no
// journal listens.
package journallog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
)

// New returns a logger for identifier (the journal's SYSLOG_IDENTIFIER, e.g. "kiln-firstboot") at level.
// It writes to the journal when stderr is connected to it (running as a service), otherwise text to stderr:
// an admin running a subcommand in a shell wants the output there, not in the journal.
func New(identifier string, level slog.Leveler) *slog.Logger {
	if journal.Enabled() {
		if ok, _ := journal.StderrIsJournalStream(); ok {
			return slog.New(NewHandler(identifier, level, journal.Send))
		}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// SendFunc sends one journal entry; journal.Send in production, a recorder in tests.
type SendFunc func(message string, priority journal.Priority, fields map[string]string) error

// Handler is a slog.Handler that sends each record as one journal entry.
type Handler struct {
	identifier string
	level      slog.Leveler
	send       SendFunc
	// attrs are the attributes added by WithAttrs, already flattened (group prefix in the key).
	attrs []field
	// groups is the open group path from WithGroup, applied to attributes added later.
	groups []string
	// mu guards fallback, the writer used when the journal refuses an entry.
	mu       *sync.Mutex
	fallback io.Writer
}

type field struct{ key, value string }

// NewHandler returns a Handler that sends through send.
func NewHandler(identifier string, level slog.Leveler, send SendFunc) *Handler {
	if level == nil {
		level = slog.LevelInfo
	}
	return &Handler{identifier: identifier, level: level, send: send, mu: &sync.Mutex{}, fallback: os.Stderr}
}

func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	h2 := *h
	h2.attrs = append(append([]field(nil), h.attrs...), flatten(h.groups, as)...)
	return &h2
}

func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.groups = append(append([]string(nil), h.groups...), name)
	return &h2
}

// Handle sends MESSAGE as "msg key=value …" (journalctl's default output shows only MESSAGE, so the
// attributes must be readable there too) and each attribute as its own field.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	fields := append([]field(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, flatten(h.groups, []slog.Attr{a})...)
		return true
	})
	var msg strings.Builder
	msg.WriteString(r.Message)
	vars := map[string]string{"SYSLOG_IDENTIFIER": h.identifier}
	for _, f := range fields {
		fmt.Fprintf(&msg, " %s=%s", f.key, quote(f.value))
		vars[fieldName(f.key)] = f.value
	}
	if err := h.send(msg.String(), priority(r.Level), vars); err != nil {
		// Losing a log line silently would hide exactly the failures logs are for.
		h.mu.Lock()
		defer h.mu.Unlock()
		fmt.Fprintf(h.fallback, "%s %s (journal: %v)\n", r.Level, msg.String(), err)
	}
	return nil
}

// flatten resolves attributes into key/value pairs, joining group names with '.' as slog's text handler does.
func flatten(groups []string, as []slog.Attr) []field {
	var out []field
	for _, a := range as {
		a.Value = a.Value.Resolve()
		if a.Equal(slog.Attr{}) {
			continue // slog's rule: empty attributes are ignored
		}
		if a.Value.Kind() == slog.KindGroup {
			sub := groups
			if a.Key != "" {
				sub = append(append([]string(nil), groups...), a.Key)
			}
			out = append(out, flatten(sub, a.Value.Group())...)
			continue
		}
		key := strings.Join(append(append([]string(nil), groups...), a.Key), ".")
		out = append(out, field{key: key, value: a.Value.String()})
	}
	return out
}

// fieldName maps a slog key to a journal field name: upper case, [A-Z0-9_], not starting with '_' or a digit
// (journald drops entries with invalid names; a leading '_' is reserved for trusted fields).
func fieldName(key string) string {
	var b strings.Builder
	for _, c := range strings.ToUpper(key) {
		if (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_")
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		s = "F_" + s
	}
	// These would overwrite the entry's own fields.
	switch s {
	case "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "MESSAGE_ID", "CODE_FILE", "CODE_LINE", "CODE_FUNC":
		s = "F_" + s
	}
	return s
}

func quote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return strconv.Quote(s)
	}
	return s
}

func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}
