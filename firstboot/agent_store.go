package firstboot

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-project/kiln/firstboot/discovery"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/files"
)

// Files under Options.StateDir (/var/lib/kiln). Both hold what must survive a crash at any instant: the
// election acceptor state (written before any reply leaves the node) and the formation record (which
// carries the join tokens, hence 0600).
const (
	electionFile  = "election.json"
	formationFile = "formation.json"
	// epochFile holds the formation epoch this node was last ready in (see state.Inputs.LocalEpoch).
	epochFile = "epoch.json"
)

// localEpoch is epochFile's content.
type localEpoch struct {
	Epoch int `json:"epoch"`
}

// record is the persisted and gossiped formation: the Formation plus what merging needs.
type record struct {
	state.Formation
	// Updated orders refreshes of the same swarm's record (new manager list, rotated tokens); clocks may
	// differ between nodes, which only delays a refresh, never mixes swarms.
	Updated time.Time `json:"updated"`
	// Origin is the node that produced this version. It signs it (Sig, with the node key OriginKey), so no
	// other key holder can make a record, a new epoch in particular, appear to come from a member it is not.
	Origin    string `json:"origin"`
	OriginKey []byte `json:"originKey,omitempty"`
	Sig       []byte `json:"sig,omitempty"`
}

// labelRecord versions what a record signature covers: the record's JSON without Sig. A field added to the
// record changes that JSON for agents that know it and not for those that don't, so it needs a new label.
const labelRecord = "kiln formation record ed25519 v1\x00"

func (r *record) signedBytes() []byte {
	c := *r
	c.Sig = nil
	b, _ := json.Marshal(&c)
	return append([]byte(labelRecord), b...)
}

// sign makes r this node's version: Origin, OriginKey and Sig.
func (r *record) sign(origin string, key ed25519.PrivateKey) {
	r.Origin, r.OriginKey = origin, key.Public().(ed25519.PublicKey)
	r.Sig = ed25519.Sign(key, r.signedBytes())
}

// checkOrigin verifies r's signature against the node key pinned for its origin (pinned: nil when discovery
// has none this run; then the record's own key is taken on its word, as on first use). An unsigned record is
// an agent from before signing: accepted only when its origin has no pinned key.
func (r *record) checkOrigin(pinned ed25519.PublicKey) error {
	if len(r.Sig) == 0 {
		if pinned != nil {
			return fmt.Errorf("unsigned formation record claims origin %s, which has a node key", r.Origin)
		}
		return nil
	}
	if len(r.OriginKey) != ed25519.PublicKeySize || !ed25519.Verify(r.OriginKey, r.signedBytes(), r.Sig) {
		return fmt.Errorf("formation record of origin %s: bad signature", r.Origin)
	}
	if pinned != nil && !pinned.Equal(ed25519.PublicKey(r.OriginKey)) {
		return fmt.Errorf("formation record claims origin %s but is signed with another node's key", r.Origin)
	}
	return nil
}

func (r *record) valid() error {
	switch {
	case r.SwarmID == "":
		return errors.New("formation record without swarm id")
	case r.Initialiser == "":
		return errors.New("formation record without initialiser")
	case r.ManagerToken == "" || r.WorkerToken == "":
		return errors.New("formation record without join tokens")
	case len(r.ManagerAddrs) == 0:
		return errors.New("formation record without manager addresses")
	}
	if r.StorageCA != nil {
		if err := r.StorageCA.Valid(); err != nil {
			return fmt.Errorf("formation record: %w", err)
		}
	}
	return nil
}

// writeJSON writes v to path atomically with mode 0600: temp file in the same directory, fsync, rename,
// fsync of the directory, so after a crash the file is either the old or the new version.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	// The state directory is private: the formation record carries the join tokens.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return files.Write(path, append(data, '\n'), 0o600)
}

// readJSON reads path into v; a missing file leaves v untouched and reports false.
func readJSON(path string, v any) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("decode %s: %w", path, err)
	}
	return true, nil
}

// StorageTLSWanted reports whether this node's glusterd should start with management TLS (the secure-access
// switch, set before glusterd starts by `kiln-firstboot glusterd-tls`): yes, unless the formation record in
// stateDir is of a cluster formed without a storage CA, whose members all speak plaintext. Before any record
// exists it is yes: every cluster this agent forms gets a CA, and a glusterd that starts with TLS needs no
// restart at formation.
func StorageTLSWanted(stateDir string) (bool, error) {
	var r record
	ok, err := readJSON(filepath.Join(stateDir, formationFile), &r)
	if err != nil {
		return false, err
	}
	return !ok || r.StorageCA != nil, nil
}

// NewEpoch is the formation-record half of `kiln-firstboot recover --force-new-cluster`, run while the agent
// is stopped: the record in stateDir gets the next epoch, this node's manager address as the only one, a
// fresh Updated time (so it spreads), and no gluster pool map (the coordinator republishes the shrunken
// pool); this node's local epoch is set to it. Nodes that come back from before the recovery see the newer
// epoch and start over instead of bringing back the old majority's state. It returns the new epoch.
func NewEpoch(stateDir, nodeID, managerAddr string, now time.Time) (int, error) {
	key, err := discovery.LoadNodeKey(filepath.Join(stateDir, discovery.NodeKeyFile))
	if err != nil {
		return 0, err
	}
	var r record
	ok, err := readJSON(filepath.Join(stateDir, formationFile), &r)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%s: no formation record: this node never formed a cluster", filepath.Join(stateDir, formationFile))
	}
	r.Epoch++
	// The recovering node is the new epoch's initialiser: it forced the new swarm and holds the only brick.
	// The gluster coordinator follows the initialiser; left as the old one, a returning old initialiser
	// (reset to a fresh glusterd) would coordinate again and probe the others into a second pool.
	r.Initialiser = nodeID
	r.ManagerAddrs = []string{managerAddr}
	r.Managers = 1
	r.GlusterPeers = nil
	r.Updated = now.UTC()
	r.sign(nodeID, key)
	if err := r.valid(); err != nil {
		return 0, err
	}
	if err := writeJSON(filepath.Join(stateDir, formationFile), &r); err != nil {
		return 0, err
	}
	if err := writeJSON(filepath.Join(stateDir, epochFile), localEpoch{Epoch: r.Epoch}); err != nil {
		return 0, err
	}
	return r.Epoch, nil
}
