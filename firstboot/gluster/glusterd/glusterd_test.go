package glusterd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	uuidA = "aaaaaaaa-0000-4000-8000-00000000000a"
	uuidC = "cccccccc-0000-4000-8000-00000000000c"
	uuidX = "99999999-0000-4000-8000-000000000099"
)

func TestGlusterdInfoUUID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "glusterd.info")
	if id, err := ReadUUID(path); err != nil || id != "" {
		t.Fatalf("missing file: %q %v", id, err)
	}
	if err := os.WriteFile(path, []byte("UUID="+uuidX+"\noperating-version=100000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteUUID(path, uuidC); err != nil {
		t.Fatal(err)
	}
	if id, err := ReadUUID(path); err != nil || id != uuidC {
		t.Fatalf("after rewrite: %q %v", id, err)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "operating-version=100000\n") {
		t.Errorf("operating-version lost: %s", b)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("glusterd.info mode %v %v, want 0600", fi.Mode(), err)
	}
	if got := string(WithUUID(nil, uuidC)); got != "UUID="+uuidC+"\n" {
		t.Errorf("WithUUID(empty) = %q", got)
	}
	fresh := filepath.Join(t.TempDir(), "glusterd.info")
	if err := WriteUUID(fresh, uuidA); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(fresh); string(b) != "UUID="+uuidA+"\n" {
		t.Errorf("WriteUUID without a file: %q", b)
	}
}

func TestWritePeerFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "peers")
	if err := WritePeerFiles(dir, map[string]string{"10.77.0.11": uuidA}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, uuidA))
	if err != nil {
		t.Fatal(err)
	}
	if want := "uuid=" + uuidA + "\nstate=3\nhostname1=10.77.0.11\n"; string(got) != want {
		t.Errorf("peer file %q, want %q", got, want)
	}
	if err := WritePeerFiles(dir, map[string]string{"10.77.0.12": "not-a-uuid"}); err == nil {
		t.Error("a malformed UUID from the formation record was written as a peer file")
	}
	if err := WritePeerFiles(dir, map[string]string{"kiln-b": uuidC}); err == nil {
		t.Error("a peer file was written for a name that is not an address")
	}
	if _, err := ParseUUID("nope"); err == nil {
		t.Fatal("ParseUUID accepted garbage")
	}
}

func TestSetAside(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "glusterd")
	if err := os.MkdirAll(filepath.Join(state, "peers"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := SetAside(state, ".before-epoch-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(state+".before-epoch-1", "peers")); err != nil {
		t.Errorf("set-aside state: %v", err)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state still in place: %v", err)
	}
	if err := SetAside(filepath.Join(dir, "absent"), ".x"); err != nil {
		t.Errorf("nothing to set aside: %v", err)
	}
}

func TestMarkers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiln", ResetEpochFile)
	if HasMarker(path) || ReadResetEpoch(path) != 0 {
		t.Fatal("absent marker reads as present")
	}
	if err := WriteMarker(path, "2"); err != nil {
		t.Fatal(err)
	}
	if !HasMarker(path) || ReadResetEpoch(path) != 2 {
		t.Errorf("marker: present %v, epoch %d; want true, 2", HasMarker(path), ReadResetEpoch(path))
	}
	if err := WriteMarker(path, "garbage"); err != nil {
		t.Fatal(err)
	}
	if ReadResetEpoch(path) != 0 {
		t.Error("an unreadable epoch must read as never reset")
	}
}
