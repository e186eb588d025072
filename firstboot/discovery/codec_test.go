package discovery

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var testKey = bytes.Repeat([]byte{7}, 32)

func testKeys(t testing.TB, name string, key []byte) Keys {
	t.Helper()
	k, err := DeriveKeys(name, key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDeriveKeys(t *testing.T) {
	a := testKeys(t, "garage", testKey)
	if bytes.Equal(a.Gossip, a.Beacon) || bytes.Equal(a.Gossip, testKey) || bytes.Equal(a.Beacon, testKey) {
		t.Fatal("derived keys must differ from each other and from the cluster key")
	}
	if b := testKeys(t, "garage", testKey); !bytes.Equal(a.Gossip, b.Gossip) || a.NameHash != b.NameHash {
		t.Fatal("derivation is not deterministic")
	}
	if c := testKeys(t, "other", testKey); bytes.Equal(a.Gossip, c.Gossip) || a.NameHash == c.NameHash {
		t.Fatal("cluster name does not separate keys")
	}
	if _, err := DeriveKeys("garage", testKey[:16]); err == nil {
		t.Fatal("short key accepted")
	}
}

func sampleBeacon(k Keys) Beacon {
	return Beacon{NameHash: k.NameHash, NodeID: "0123abcd", Addr: netip.MustParseAddrPort("10.77.0.11:7946"),
		Time: time.UnixMilli(1_764_000_000_123)}
}

func TestBeaconRoundTrip(t *testing.T) {
	k := testKeys(t, "garage", testKey)
	for _, addr := range []string{"10.77.0.11:7946", "[fd00::1]:7946"} {
		b := sampleBeacon(k)
		b.Addr = netip.MustParseAddrPort(addr)
		p, err := EncodeBeacon(b, k.Beacon)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) > MaxBeaconSize {
			t.Fatalf("beacon %d bytes > %d", len(p), MaxBeaconSize)
		}
		got, err := DecodeBeacon(p, k.NameHash, k.Beacon)
		if err != nil {
			t.Fatal(err)
		}
		if got.NodeID != b.NodeID || got.Addr != b.Addr || !got.Time.Equal(b.Time) || got.NameHash != b.NameHash {
			t.Fatalf("got %+v, want %+v", got, b)
		}
		if bytes.Contains(p, testKey) || bytes.Contains(p, k.Beacon) || bytes.Contains(p, k.Gossip) {
			t.Fatal("beacon contains key material")
		}
	}
}

func TestBeaconRejects(t *testing.T) {
	k := testKeys(t, "garage", testKey)
	good, _ := EncodeBeacon(sampleBeacon(k), k.Beacon)
	other := testKeys(t, "garage", bytes.Repeat([]byte{8}, 32))
	wrongKey, _ := EncodeBeacon(sampleBeacon(k), other.Beacon)
	otherName := testKeys(t, "shed", testKey)
	otherCluster, _ := EncodeBeacon(sampleBeacon(otherName), otherName.Beacon)
	flipped := bytes.Clone(good)
	flipped[30] ^= 1
	cases := []struct {
		name string
		p    []byte
		want error
	}{
		{"wrong key", wrongKey, ErrBadMAC},
		{"other cluster", otherCluster, ErrOtherCluster},
		{"tampered", flipped, ErrBadMAC},
		{"truncated", good[:len(good)-1], ErrBadMAC},
		{"short", good[:20], ErrMalformed},
		{"empty", nil, ErrMalformed},
		{"bad magic", append([]byte("XXXX"), good[4:]...), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := DecodeBeacon(c.p, k.NameHash, k.Beacon); !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
	if _, err := EncodeBeacon(Beacon{NodeID: "UPPER", Addr: netip.MustParseAddrPort("1.2.3.4:5")}, k.Beacon); err == nil {
		t.Fatal("invalid id encoded")
	}
}

// remac re-authenticates a body so a test or fuzzer reaches the parser behind the MAC check.
func remac(body, key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return m.Sum(bytes.Clone(body))
}

func TestBeaconParserBehindMAC(t *testing.T) {
	k := testKeys(t, "garage", testKey)
	good, _ := EncodeBeacon(sampleBeacon(k), k.Beacon)
	body := good[:len(good)-macSize]
	for name, mutate := range map[string]func([]byte) []byte{
		"id length past end": func(b []byte) []byte { b[21] = 200; return b },
		"bad id char":        func(b []byte) []byte { b[22] = 'X'; return b },
		"bad addr length":    func(b []byte) []byte { b[21+1+8] = 5; return b },
		"zero port":          func(b []byte) []byte { b[len(b)-1], b[len(b)-2] = 0, 0; return b },
		"extra byte":         func(b []byte) []byte { return append(b, 0) },
	} {
		t.Run(name, func(t *testing.T) {
			p := remac(mutate(bytes.Clone(body)), k.Beacon)
			if _, err := DecodeBeacon(p, k.NameHash, k.Beacon); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want malformed", err)
			}
		})
	}
}

func TestReplay(t *testing.T) {
	k := testKeys(t, "garage", testKey)
	b := sampleBeacon(k)
	r := Replay{Window: time.Minute}
	now := b.Time.Add(time.Second)
	if err := r.Check(b, now); err != nil {
		t.Fatal(err)
	}
	if err := r.Check(b, now); err == nil || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("replay accepted: %v", err)
	}
	later := b
	later.Time = b.Time.Add(2 * time.Second)
	if err := r.Check(later, now); err != nil {
		t.Fatalf("newer beacon refused: %v", err)
	}
	stale := b
	stale.NodeID = "ffff"
	stale.Time = now.Add(-2 * time.Minute)
	if err := r.Check(stale, now); err == nil {
		t.Fatal("stale beacon accepted")
	}
	future := stale
	future.Time = now.Add(2 * time.Minute)
	if err := r.Check(future, now); err == nil {
		t.Fatal("future beacon accepted")
	}
}

func TestMeta(t *testing.T) {
	m := Meta{ID: "0123abcd", Hostname: "kiln-0123abcd", Phase: "formed", Initialiser: "0123abcd", SwarmID: "x7u2",
		SwarmNode: "n0de1d", GlusterEpoch: "2", NoBrick: true, StateInRAM: true}
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("got %+v %v", got, err)
	}
	if _, err := EncodeMeta(Meta{ID: "a", Hostname: strings.Repeat("h", 600)}); err == nil {
		t.Fatal("oversized meta encoded")
	}
	for _, bad := range []string{``, `{}`, `{"id":"A"}`, `{"id":"a","i":"B!"}`, `{"id":"a"} x`, `[1]`, `{"id":"a","h":"` + strings.Repeat("h", 200) + `"}`} {
		if _, err := DecodeMeta([]byte(bad)); err == nil {
			t.Errorf("DecodeMeta(%q) accepted", bad)
		}
	}
	if got, err := DecodeMeta([]byte(`{"id":"a","future":1}`)); err != nil || got.ID != "a" {
		t.Errorf("unknown field from a newer agent refused: %v", err)
	}
}

func TestEnvelope(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	pub := key.Public().(ed25519.PublicKey)
	hash := [8]byte{1, 2, 3}
	now := time.UnixMilli(1_800_000_000_000)
	window := 5 * time.Minute
	open := func(b []byte, pub ed25519.PublicKey, at time.Time) (sealed, error) {
		s, err := parseEnvelope(b)
		if err != nil {
			return s, err
		}
		return s, s.open(hash, pub, window, at)
	}

	s, err := open(seal(key, hash, "abc", now, []byte("hi")), pub, now.Add(time.Minute))
	if err != nil || s.from != "abc" || string(s.body) != "hi" || !s.signed {
		t.Fatalf("a good envelope: %+v %v", s, err)
	}
	cases := []struct {
		name string
		env  []byte
		pub  ed25519.PublicKey
		at   time.Time
		want error
	}{
		{"another node's key signs for abc", seal(other, hash, "abc", now, []byte("hi")), pub, now, ErrSignature},
		{"another cluster's name", seal(key, [8]byte{9}, "abc", now, []byte("hi")), pub, now, ErrSignature},
		{"no key pinned for the sender", seal(key, hash, "abc", now, []byte("hi")), nil, now, ErrNoKey},
		{"recorded in an earlier lifetime and replayed", seal(key, hash, "abc", now, []byte("hi")), pub, now.Add(6 * time.Minute), ErrStale},
		{"from a clock far ahead", seal(key, hash, "abc", now.Add(time.Hour), []byte("hi")), pub, now, ErrStale},
		{"unsigned, claiming a member with a key", append([]byte{3}, "abchi"...), pub, now, ErrUnsigned},
	}
	for _, c := range cases {
		if _, err := open(c.env, c.pub, c.at); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	tampered := seal(key, hash, "abc", now, []byte("hi"))
	tampered[len(tampered)-ed25519.SignatureSize-1] ^= 1
	if _, err := open(tampered, pub, now); !errors.Is(err, ErrSignature) {
		t.Errorf("tampered body: %v", err)
	}
	// An agent that does not sign (no key pinned for its id) is still heard.
	if s, err := open(append([]byte{3}, "abchi"...), nil, now); err != nil || s.from != "abc" || string(s.body) != "hi" {
		t.Errorf("unsigned from an id without a key: %+v %v", s, err)
	}
	for _, bad := range [][]byte{nil, {5, 'a'}, {1, 'A'}, {envelopeMagic, 3, 'a'}, {envelopeMagic, 0}} {
		if _, err := parseEnvelope(bad); err == nil {
			t.Errorf("parseEnvelope(%v) accepted", bad)
		}
	}
}
