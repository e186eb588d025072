package discovery

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// MetaLimit is memberlist's limit on node metadata (memberlist.MetaMaxSize).
const MetaLimit = 512

// Meta is the node metadata every member gossips with its alive messages: who it is and how far formation
// got from its point of view. It is encrypted with the rest of the gossip but carries no secret anyway:
// join tokens travel only in formation records (reliable messages and push/pull state).
type Meta struct {
	ID       string `json:"id"`
	Hostname string `json:"h,omitempty"`
	// Phase is the agent's phase (status.Phase values), for humans reading `status`.
	Phase string `json:"p,omitempty"`
	// Initialiser is the decided initialiser, once this node knows it: decisions spread through metadata
	// too, so a node that missed the election still learns the outcome.
	Initialiser string `json:"i,omitempty"`
	// SwarmID is the formed swarm's id once this node holds a formation record: "a formation is announced".
	SwarmID string `json:"s,omitempty"`
	// VIP reports that this node holds the floating address right now (observed on its interface), so
	// every node's status can name the holder, and two holders show up as what they are.
	VIP bool `json:"v,omitempty"`
	// SwarmNode is the node's own swarm node ID as its dockerd reports it ("-": in no swarm; "": not
	// observed yet). Managers compare it with their node list to find stale entries of reimaged nodes.
	SwarmNode string `json:"n,omitempty"`
	// GlusterEpoch is the formation epoch the node's glusterd state belongs to (member.GlusterEpoch).
	GlusterEpoch string `json:"g,omitempty"`
	// StorageTLS: the node's glusterd speaks TLS (member.StorageTLS).
	StorageTLS bool `json:"t,omitempty"`
	// NoBrick and StateInRAM are the node's standing for the run (member.NoBrick, member.StateInRAM): in its
	// first metadata already, so no peer ever counts it as a brick host or a voter, even for a moment.
	NoBrick    bool `json:"b,omitempty"`
	StateInRAM bool `json:"r,omitempty"`
	// Key is the node's ed25519 public key (hex), which its envelopes are signed with: peers pin it (pins).
	Key string `json:"k,omitempty"`
}

// PublicKey is the decoded Key; nil when there is none or it is malformed.
func (m Meta) PublicKey() ed25519.PublicKey {
	b, err := hex.DecodeString(m.Key)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil
	}
	return b
}

// EncodeMeta serialises m, refusing anything over the limit.
func EncodeMeta(m Meta) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("discovery: encode meta: %w", err)
	}
	if len(b) > MetaLimit {
		return nil, fmt.Errorf("discovery: meta is %d bytes, limit %d", len(b), MetaLimit)
	}
	return b, nil
}

// DecodeMeta parses metadata received from the network. Unknown fields are ignored (a newer agent may add
// some); the id must be valid and every string bounded.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) > MetaLimit {
		return m, fmt.Errorf("discovery: meta is %d bytes, limit %d", len(b), MetaLimit)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&m); err != nil {
		return Meta{}, fmt.Errorf("discovery: decode meta: %w", err)
	}
	if d.More() {
		return Meta{}, fmt.Errorf("discovery: decode meta: trailing data")
	}
	if err := validID(m.ID); err != nil {
		return Meta{}, fmt.Errorf("discovery: meta: %w", err)
	}
	if m.Initialiser != "" {
		if err := validID(m.Initialiser); err != nil {
			return Meta{}, fmt.Errorf("discovery: meta initialiser: %w", err)
		}
	}
	if m.Key != "" && m.PublicKey() == nil {
		return Meta{}, fmt.Errorf("discovery: meta key is not %d bytes of hex", ed25519.PublicKeySize)
	}
	for _, s := range []string{m.Hostname, m.Phase, m.SwarmID, m.SwarmNode, m.GlusterEpoch} {
		if len(s) > 128 {
			return Meta{}, fmt.Errorf("discovery: meta field too long")
		}
	}
	return m, nil
}
