package statefs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInRAM(t *testing.T) {
	tests := []struct {
		name       string
		marker     *string // nil: no marker file
		wantRAM    bool
		wantReason string
	}{
		{name: "no marker: /var on a disk", wantRAM: false},
		{name: "reason given", marker: ptr("no empty local disk (sda holds ntfs)\nmore detail\n"), wantRAM: true, wantReason: "no empty local disk (sda holds ntfs)"},
		{name: "empty marker", marker: ptr(""), wantRAM: true, wantReason: DefaultReason},
		{name: "control characters dropped", marker: ptr("bad\x1b[31m disk\r\n"), wantRAM: true, wantReason: "bad[31m disk"},
		{name: "long reason cut at a rune", marker: ptr(strings.Repeat("é", 150)), wantRAM: true, wantReason: strings.Repeat("é", 100)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.marker != nil {
				p := filepath.Join(root, Marker)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(*tt.marker), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			reason, inRAM, err := InRAM(root)
			if err != nil {
				t.Fatal(err)
			}
			if inRAM != tt.wantRAM || reason != tt.wantReason {
				t.Errorf("InRAM = %q, %v; want %q, %v", reason, inRAM, tt.wantReason, tt.wantRAM)
			}
		})
	}
}

func TestNoBrickLine(t *testing.T) {
	if got, want := NoBrickLine(DefaultReason), "no brick: /var is in RAM (no local disk for kiln-state)"; got != want {
		t.Errorf("NoBrickLine = %q, want %q", got, want)
	}
}

func ptr(s string) *string { return &s }
