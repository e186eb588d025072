package firstboot

import (
	"crypto/ed25519"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/discovery"
	"github.com/kiln-project/kiln/firstboot/state"
)

// A formation record is bound to its origin's node key: a key holder cannot make one appear to come from
// another member, nor change one in transit.
func TestRecordOrigin(t *testing.T) {
	_, keyX, _ := ed25519.GenerateKey(nil)
	_, keyY, _ := ed25519.GenerateKey(nil)
	pinX := keyX.Public().(ed25519.PublicKey)
	rec := func() record {
		return record{Formation: state.Formation{SwarmID: "s", Initialiser: "xx", ManagerToken: "m", WorkerToken: "w",
			ManagerAddrs: []string{"10.0.0.1:2377"}, Epoch: 1}, Updated: time.Unix(100, 0)}
	}
	good := rec()
	good.sign("xx", keyX)
	forged := rec()
	forged.sign("xx", keyY) // Y holds the cluster key and its own node key, and names X as the origin
	bumped := good
	bumped.Epoch = 2 // a forwarder raises the epoch of X's record
	unsigned := rec()
	unsigned.Origin = "xx"

	for _, c := range []struct {
		name   string
		r      record
		pinned ed25519.PublicKey
		want   string // "" accepted, else part of the error
	}{
		{"signed by its origin", good, pinX, ""},
		{"signed, origin not seen this run", good, nil, ""},
		{"another node's key for the origin's id", forged, pinX, "signed with another node's key"},
		{"changed after signing", bumped, pinX, "bad signature"},
		{"changed after signing, origin unknown", bumped, nil, "bad signature"},
		{"unsigned, origin has a key", unsigned, pinX, "unsigned"},
		{"unsigned, origin an agent without keys", unsigned, nil, ""},
	} {
		err := c.r.checkOrigin(c.pinned)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}

	// merge drops a record whose signature does not hold, a newer epoch included.
	a := &agent{opts: Options{StateDir: t.TempDir()}.withDefaults(), log: Options{}.withDefaults().Logger, kick: make(chan struct{}, 1), conflicted: map[string]bool{}}
	cur := good
	a.rec = &cur
	a.merge(bumped, "yy")
	if a.rec.Epoch != 1 {
		t.Fatalf("a record changed after signing was adopted: epoch %d", a.rec.Epoch)
	}
}

// The record NewEpoch writes is signed with the node key in the state directory.
func TestNewEpochSigns(t *testing.T) {
	dir := t.TempDir()
	old := record{Formation: state.Formation{SwarmID: "s", Initialiser: "aa", ManagerToken: "m", WorkerToken: "w",
		ManagerAddrs: []string{"10.0.0.1:2377"}}, Updated: time.Unix(1, 0)}
	if err := writeJSON(filepath.Join(dir, formationFile), &old); err != nil {
		t.Fatal(err)
	}
	if _, err := NewEpoch(dir, "bb", "10.0.0.1:2377", time.Unix(1000, 0)); err != nil {
		t.Fatal(err)
	}
	key, err := discovery.LoadNodeKey(filepath.Join(dir, discovery.NodeKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	var r record
	if _, err := readJSON(filepath.Join(dir, formationFile), &r); err != nil {
		t.Fatal(err)
	}
	if err := r.checkOrigin(key.Public().(ed25519.PublicKey)); err != nil || r.Origin != "bb" {
		t.Fatalf("origin %s: %v", r.Origin, err)
	}
}
