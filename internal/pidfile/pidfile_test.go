package pidfile

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestRunning(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "self.pid")
	if err := os.WriteFile(self, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The test binary's command line names its own path (argv[0]).
	if pid, ok := Running(self, filepath.Base(os.Args[0])); !ok || pid != os.Getpid() {
		t.Errorf("Running(own pid, own binary) = %d, %v", pid, ok)
	}
	if _, ok := Running(self, "no-such-marker-in-this-cmdline"); ok {
		t.Error("a pid whose command line lacks the marker was believed")
	}
	if _, ok := Running(filepath.Join(dir, "missing.pid"), "x"); ok {
		t.Error("a missing pid file was believed")
	}
	bad := filepath.Join(dir, "bad.pid")
	if err := os.WriteFile(bad, []byte("-3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := Running(bad, "x"); ok {
		t.Error("a negative pid was believed")
	}
}
