package discovery

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Every reliable message and every push/pull state is sealed in an envelope signed with the sender's node
// key (ed25519), because memberlist's channel only proves that the sender holds the cluster key: NotifyMsg
// does not say who sent a message, and any key holder could otherwise write any node id at its head.
//
//	0xFE | idlen uint8 | id | unix-ms uint64 | body | signature[64]
//
// The signature covers labelEnvelope, the cluster name hash and every byte before it. Receivers check it
// against the key pinned for that id (pins) and refuse an envelope whose time is more than the window off
// their clock: traffic recorded in an earlier lifetime of the cluster (same name and key) and replayed later
// is stale. A replay inside the window repeats a message the agent's protocols already treat as idempotent.
//
// The unsigned form of earlier agents, idlen | id | body (idlen 1..64, so never 0xFE), is accepted only
// from an id that has no pinned key: an agent that never announced one. Once every member runs a signing
// agent no id is left that an unsigned message may claim.
const (
	envelopeMagic = 0xFE
	labelEnvelope = "kiln envelope ed25519 v2\x00"
	// envelopeOverhead is the signed envelope's size without id and body.
	envelopeOverhead = 1 + 1 + 8 + ed25519.SignatureSize
)

// Errors of opening an envelope, told apart in logs.
var (
	ErrUnsigned  = errors.New("unsigned message from a member that has a node key")
	ErrNoKey     = errors.New("no node key known for the sender")
	ErrSignature = errors.New("envelope signature does not match the sender's node key")
	ErrStale     = errors.New("envelope time outside the window")
)

// seal signs body as from at now.
func seal(key ed25519.PrivateKey, nameHash [8]byte, from string, now time.Time, body []byte) []byte {
	out := make([]byte, 0, envelopeOverhead+len(from)+len(body))
	out = append(out, envelopeMagic, byte(len(from)))
	out = append(out, from...)
	out = binary.BigEndian.AppendUint64(out, uint64(now.UnixMilli()))
	out = append(out, body...)
	return append(out, ed25519.Sign(key, signedBytes(nameHash, out))...)
}

func signedBytes(nameHash [8]byte, msg []byte) []byte {
	b := make([]byte, 0, len(labelEnvelope)+8+len(msg))
	b = append(b, labelEnvelope...)
	b = append(b, nameHash[:]...)
	return append(b, msg...)
}

// sealed is an envelope taken apart, signature not yet checked.
type sealed struct {
	from   string
	signed bool
	time   time.Time
	body   []byte
	msg    []byte // the signed bytes (signed envelopes)
	sig    []byte
}

// parseEnvelope takes b apart (either form) without trusting it.
func parseEnvelope(b []byte) (sealed, error) {
	if len(b) < 1 {
		return sealed{}, errors.New("empty envelope")
	}
	if b[0] != envelopeMagic {
		n := int(b[0])
		if len(b) < 1+n {
			return sealed{}, errors.New("truncated envelope")
		}
		from := string(b[1 : 1+n])
		if err := validID(from); err != nil {
			return sealed{}, err
		}
		return sealed{from: from, body: append([]byte(nil), b[1+n:]...)}, nil
	}
	if len(b) < envelopeOverhead+1 {
		return sealed{}, errors.New("truncated envelope")
	}
	n := int(b[1])
	if len(b) < envelopeOverhead+n {
		return sealed{}, errors.New("truncated envelope")
	}
	from := string(b[2 : 2+n])
	if err := validID(from); err != nil {
		return sealed{}, err
	}
	ms := binary.BigEndian.Uint64(b[2+n : 10+n])
	if ms > 1<<62 {
		return sealed{}, errors.New("envelope time out of range")
	}
	end := len(b) - ed25519.SignatureSize
	return sealed{
		from: from, signed: true, time: time.UnixMilli(int64(ms)),
		body: append([]byte(nil), b[10+n:end]...), msg: b[:end], sig: b[end:],
	}, nil
}

// open checks a parsed envelope: a signed one against pub (nil: no key pinned for the sender) and the
// window around now; an unsigned one only when the sender has no pinned key.
func (s sealed) open(nameHash [8]byte, pub ed25519.PublicKey, window time.Duration, now time.Time) error {
	if !s.signed {
		if pub != nil {
			return fmt.Errorf("%w (%s)", ErrUnsigned, s.from)
		}
		return nil
	}
	if pub == nil {
		return fmt.Errorf("%w (%s)", ErrNoKey, s.from)
	}
	if !ed25519.Verify(pub, signedBytes(nameHash, s.msg), s.sig) {
		return fmt.Errorf("%w (%s)", ErrSignature, s.from)
	}
	if d := now.Sub(s.time); d > window || d < -window {
		return fmt.Errorf("%w: %s sent it %s off the local clock (window %s)", ErrStale, s.from, d.Round(time.Second), window)
	}
	return nil
}
