package files

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "log")
	if err := os.WriteFile(p, []byte("one\ntwo\nthree\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]string{1: "three", 2: "two\nthree", 3: "one\ntwo\nthree", 10: "one\ntwo\nthree"} {
		if got := Tail(p, n); got != want {
			t.Errorf("Tail(%d) = %q, want %q", n, got, want)
		}
	}
	// A long log is read from its last window only, and still ends where the file ends.
	big := strings.Repeat("x\n", tailWindow) + "last\n"
	if err := os.WriteFile(p, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := Tail(p, 2); got != "x\nlast" {
		t.Errorf("Tail of a long file = %q", got)
	}
	if got := Tail(filepath.Join(dir, "missing"), 3); !strings.Contains(got, "no such file") {
		t.Errorf("Tail of a missing file = %q, want the error", got)
	}
}
