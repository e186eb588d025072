package discovery

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
)

// Keys are the per-purpose keys derived from the cluster key. Each purpose gets its own key (HKDF-SHA256
// with a distinct label), so the beacon MAC key, sent over the LAN as MACs in the clear, never shares
// material with the gossip encryption key, and the raw cluster key itself is never used on the wire.
type Keys struct {
	// Gossip encrypts and authenticates all memberlist traffic (AES-256-GCM), UDP and TCP alike.
	Gossip []byte
	// Beacon keys the HMAC-SHA256 of LAN beacons.
	Beacon []byte
	// NameHash identifies the cluster name in beacons without revealing it (8 bytes of SHA-256).
	NameHash [8]byte
}

// labelGossip and labelBeacon version the derivation: changing the wire format changes the label.
const (
	labelGossip = "kiln memberlist aes-256-gcm v1"
	labelBeacon = "kiln beacon hmac-sha256 v1"
)

// DeriveKeys derives the keys for a cluster name and 32-byte cluster key.
func DeriveKeys(name string, clusterKey []byte) (Keys, error) {
	if len(clusterKey) != 32 {
		return Keys{}, fmt.Errorf("discovery: cluster key is %d bytes, want 32", len(clusterKey))
	}
	var k Keys
	var err error
	// The cluster name is the salt: two clusters that (wrongly) share a key still get different keys.
	if k.Gossip, err = hkdf.Key(sha256.New, clusterKey, []byte(name), labelGossip, 32); err != nil {
		return Keys{}, fmt.Errorf("discovery: derive gossip key: %w", err)
	}
	if k.Beacon, err = hkdf.Key(sha256.New, clusterKey, []byte(name), labelBeacon, 32); err != nil {
		return Keys{}, fmt.Errorf("discovery: derive beacon key: %w", err)
	}
	h := sha256.Sum256([]byte("kiln cluster name\x00" + name))
	copy(k.NameHash[:], h[:8])
	return k, nil
}
