package version

import (
	"os"
	"runtime"
	"testing"
)

func TestString(t *testing.T) {
	for _, c := range []struct {
		in   Info
		want string
	}{
		{Info{Version: "v0.3.0", Commit: "0123456789abcdef0123", CommitTime: "2026-01-02T03:04:05Z", Go: "go1.26.8"},
			"v0.3.0 (commit 0123456789ab, 2026-01-02, go1.26.8)"},
		{Info{Version: "dev", Commit: "0123456789abcdef0123", CommitTime: "2026-01-02T03:04:05Z", Modified: true, Go: "go1.26.8"},
			"dev (commit 0123456789ab+modified, 2026-01-02, go1.26.8)"},
		{Info{Version: "dev", Go: "go1.26.8"}, "dev (no commit recorded, go1.26.8)"},
	} {
		if got := c.in.String(); got != c.want {
			t.Errorf("%+v: got %q, want %q", c.in, got, c.want)
		}
	}
}

// The builder reads the agent's record from the binary file; the test binary is a Go binary like it.
func TestReadFile(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	i, err := ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if i.Go != runtime.Version() || i.Version != "dev" {
		t.Errorf("ReadFile(test binary) = %+v, want go %s, version dev", i, runtime.Version())
	}
	if _, err := ReadFile("/etc/hostname"); err == nil {
		t.Error("ReadFile(a text file): no error")
	}
}
