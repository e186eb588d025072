package discovery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Beacon is what a node announces on the LAN so that nodes without a seed find each other: "a member of
// this cluster listens for gossip at Addr". It carries no secret; it is authenticated (HMAC-SHA256 with a
// key derived from the cluster key), not encrypted. Joining the advertised address then runs memberlist's
// encrypted push/pull, so a forged or replayed beacon can at most make a node try a join that fails.
type Beacon struct {
	NameHash [8]byte
	NodeID   string
	Addr     netip.AddrPort
	Time     time.Time // sender's clock, millisecond precision
}

// Wire format, version 1 (big endian):
//
//	"KLNB" | ver=1 | namehash[8] | unix-ms uint64 | idlen uint8 | id | addrlen uint8 (4|16) | addr | port uint16 | hmac[32]
const (
	beaconMagic   = "KLNB"
	beaconVersion = 1
	macSize       = sha256.Size
	maxIDLen      = 64
	// MaxBeaconSize bounds a beacon: header 21 + id 65 + addr 17 + port 2 + mac 32.
	MaxBeaconSize = 21 + 1 + maxIDLen + 1 + 16 + 2 + macSize
)

// Errors a receiver tells apart in its logs: another cluster is routine on a shared LAN, a bad MAC for our
// own cluster name means a node with the wrong key (or an attacker).
var (
	ErrMalformed    = errors.New("malformed beacon")
	ErrOtherCluster = errors.New("beacon of another cluster")
	ErrBadMAC       = errors.New("beacon MAC mismatch (another cluster key?)")
)

// EncodeBeacon serialises and authenticates b with the beacon key.
func EncodeBeacon(b Beacon, key []byte) ([]byte, error) {
	if err := validID(b.NodeID); err != nil {
		return nil, err
	}
	if !b.Addr.IsValid() {
		return nil, fmt.Errorf("beacon: invalid address %v", b.Addr)
	}
	out := make([]byte, 0, MaxBeaconSize)
	out = append(out, beaconMagic...)
	out = append(out, beaconVersion)
	out = append(out, b.NameHash[:]...)
	out = binary.BigEndian.AppendUint64(out, uint64(b.Time.UnixMilli()))
	out = append(out, byte(len(b.NodeID)))
	out = append(out, b.NodeID...)
	a := b.Addr.Addr().Unmap()
	ab := a.AsSlice()
	out = append(out, byte(len(ab)))
	out = append(out, ab...)
	out = binary.BigEndian.AppendUint16(out, b.Addr.Port())
	m := hmac.New(sha256.New, key)
	m.Write(out)
	return m.Sum(out), nil
}

// DecodeBeacon parses and verifies untrusted bytes against any of keys (more than one during a key rotation). It checks the cluster name hash first (cheap, lets the
// caller ignore other clusters quietly), then the MAC, and only then trusts the contents. Freshness is the
// caller's job (it needs a clock and per-sender memory): see Replay.
func DecodeBeacon(p []byte, nameHash [8]byte, keys ...[]byte) (Beacon, error) {
	var b Beacon
	if len(p) < 4+1+8+8+1+1+1+4+2+macSize || len(p) > MaxBeaconSize {
		return b, fmt.Errorf("%w: length %d", ErrMalformed, len(p))
	}
	if string(p[:4]) != beaconMagic || p[4] != beaconVersion {
		return b, fmt.Errorf("%w: bad magic or version", ErrMalformed)
	}
	if [8]byte(p[5:13]) != nameHash {
		return b, ErrOtherCluster
	}
	body, mac := p[:len(p)-macSize], p[len(p)-macSize:]
	if !slices.ContainsFunc(keys, func(key []byte) bool {
		m := hmac.New(sha256.New, key)
		m.Write(body)
		return hmac.Equal(m.Sum(nil), mac)
	}) {
		return b, ErrBadMAC
	}
	copy(b.NameHash[:], p[5:13])
	ms := binary.BigEndian.Uint64(p[13:21])
	if ms > 1<<62 {
		return Beacon{}, fmt.Errorf("%w: timestamp out of range", ErrMalformed)
	}
	b.Time = time.UnixMilli(int64(ms))
	rest := body[21:]
	idLen := int(rest[0])
	rest = rest[1:]
	if idLen > len(rest) {
		return Beacon{}, fmt.Errorf("%w: id length", ErrMalformed)
	}
	b.NodeID, rest = string(rest[:idLen]), rest[idLen:]
	if err := validID(b.NodeID); err != nil {
		return Beacon{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(rest) < 1 {
		return Beacon{}, fmt.Errorf("%w: truncated address", ErrMalformed)
	}
	al := int(rest[0])
	rest = rest[1:]
	if (al != 4 && al != 16) || len(rest) != al+2 {
		return Beacon{}, fmt.Errorf("%w: address length", ErrMalformed)
	}
	addr, _ := netip.AddrFromSlice(rest[:al])
	port := binary.BigEndian.Uint16(rest[al:])
	if port == 0 || addr.IsUnspecified() || addr.IsMulticast() {
		return Beacon{}, fmt.Errorf("%w: unusable address %v:%d", ErrMalformed, addr, port)
	}
	b.Addr = netip.AddrPortFrom(addr, port)
	return b, nil
}

// validID accepts the ids kiln generates (lower-case hex) with room for other schemes: [0-9a-z-], 1..64.
func validID(id string) error {
	if len(id) == 0 || len(id) > maxIDLen {
		return fmt.Errorf("node id length %d not in 1..%d", len(id), maxIDLen)
	}
	for _, c := range []byte(id) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '-') {
			return fmt.Errorf("node id %q: character %q not in [0-9a-z-]", id, c)
		}
	}
	return nil
}

// Replay keeps, per sender, the newest beacon time accepted, and refuses beacons outside a window around
// the local clock or not newer than the last one from that sender. Not safe for concurrent use.
type Replay struct {
	// Window is the accepted clock difference either way. Fresh hardware may boot with a wrong RTC and no
	// NTP yet, so it is minutes, not seconds: a replayed beacon only triggers an encrypted join attempt,
	// while a too-tight window would silently stop discovery between nodes with skewed clocks.
	Window time.Duration
	last   map[string]time.Time
}

// Check reports whether b is fresh at now and records it.
func (r *Replay) Check(b Beacon, now time.Time) error {
	if d := now.Sub(b.Time); d > r.Window || d < -r.Window {
		return fmt.Errorf("beacon from %s is %s off the local clock (window %s)", b.NodeID, d.Round(time.Second), r.Window)
	}
	if r.last == nil {
		r.last = map[string]time.Time{}
	}
	if l, ok := r.last[b.NodeID]; ok && !b.Time.After(l) {
		return fmt.Errorf("beacon from %s replayed (not newer than %s)", b.NodeID, l.Format(time.RFC3339Nano))
	}
	r.last[b.NodeID] = b.Time
	// Forget senders whose last beacon left the window: bounded memory, and a sender whose clock stepped
	// back is accepted again after one window.
	for id, l := range r.last {
		if now.Sub(l) > r.Window {
			delete(r.last, id)
		}
	}
	return nil
}
