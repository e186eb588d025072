package discovery

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/kiln-project/kiln/internal/files"
)

// NodeKeyFile is the node's signing key under the agent's state directory.
const NodeKeyFile = "node.key"

// LoadNodeKey reads the node's ed25519 signing key from path, or makes one and writes it there (mode 0600)
// when the file is missing. The key lives on the state partition: a reboot keeps it, a reimage (empty /var)
// makes a new one, which the other members accept once they have seen the old holder go (see pins).
func LoadNodeKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(b) != ed25519.SeedSize {
			return nil, fmt.Errorf("discovery: node key %s is %d bytes, want %d", path, len(b), ed25519.SeedSize)
		}
		return ed25519.NewKeyFromSeed(b), nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("discovery: read node key: %w", err)
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("discovery: make node key: %w", err)
	}
	if err := files.Write(path, seed, 0o600); err != nil {
		return nil, fmt.Errorf("discovery: save node key: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
