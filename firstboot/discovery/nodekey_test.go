package discovery

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadNodeKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiln", NodeKeyFile)
	k1, err := LoadNodeKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	k2, err := LoadNodeKey(path)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("a reboot must keep the key: %v", err)
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadNodeKey(path); err == nil {
		t.Fatal("a malformed key file was accepted (it must be fixed by hand, not replaced: peers pin the key)")
	}
}
