package journallog

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

type entry struct {
	msg    string
	pri    journal.Priority
	fields map[string]string
}

func recorder(into *[]entry) SendFunc {
	return func(m string, p journal.Priority, f map[string]string) error {
		*into = append(*into, entry{m, p, f})
		return nil
	}
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name       string
		log        func(l *slog.Logger)
		wantMsg    string
		wantPri    journal.Priority
		wantFields map[string]string
	}{
		{
			name:       "plain",
			log:        func(l *slog.Logger) { l.Info("joined swarm", "node", "kiln-1", "managers", 3) },
			wantMsg:    "joined swarm node=kiln-1 managers=3",
			wantPri:    journal.PriInfo,
			wantFields: map[string]string{"NODE": "kiln-1", "MANAGERS": "3", "SYSLOG_IDENTIFIER": "test"},
		},
		{
			name:       "with attrs and groups",
			log:        func(l *slog.Logger) { l.With("stage", "ignite").WithGroup("file").Warn("skipped", "path", "/etc/x y") },
			wantMsg:    `skipped stage=ignite file.path="/etc/x y"`,
			wantPri:    journal.PriWarning,
			wantFields: map[string]string{"STAGE": "ignite", "FILE_PATH": "/etc/x y"},
		},
		{
			name: "error level, reserved and odd names",
			log: func(l *slog.Logger) {
				l.Error("boom", "message", "x", "_secret", "y", "9lives", "z", "err", errors.New("e"))
			},
			wantMsg:    "boom message=x _secret=y 9lives=z err=e",
			wantPri:    journal.PriErr,
			wantFields: map[string]string{"F_MESSAGE": "x", "SECRET": "y", "F_9LIVES": "z", "ERR": "e"},
		},
		{
			name:       "inline group and empty attr",
			log:        func(l *slog.Logger) { l.Info("m", slog.Group("vip", "addr", "10.0.0.1"), slog.Attr{}) },
			wantMsg:    "m vip.addr=10.0.0.1",
			wantPri:    journal.PriInfo,
			wantFields: map[string]string{"VIP_ADDR": "10.0.0.1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []entry
			tt.log(slog.New(NewHandler("test", slog.LevelDebug, recorder(&got))))
			if len(got) != 1 {
				t.Fatalf("%d entries, want 1", len(got))
			}
			e := got[0]
			if e.msg != tt.wantMsg || e.pri != tt.wantPri {
				t.Errorf("got %q pri %d, want %q pri %d", e.msg, e.pri, tt.wantMsg, tt.wantPri)
			}
			for k, v := range tt.wantFields {
				if e.fields[k] != v {
					t.Errorf("field %s = %q, want %q (all: %v)", k, e.fields[k], v, e.fields)
				}
			}
		})
	}
}

func TestLevelAndFallback(t *testing.T) {
	var got []entry
	h := NewHandler("test", slog.LevelInfo, recorder(&got))
	l := slog.New(h)
	l.Debug("hidden")
	if len(got) != 0 {
		t.Errorf("debug record sent at info level")
	}
	var buf bytes.Buffer
	failing := NewHandler("test", nil, func(string, journal.Priority, map[string]string) error { return errors.New("socket gone") })
	failing.fallback = &buf
	if err := failing.Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelWarn, "kept", 0)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "kept") || !strings.Contains(buf.String(), "socket gone") {
		t.Errorf("fallback got %q", buf.String())
	}
}
