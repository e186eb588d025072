package discovery

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

// FuzzDecodeBeacon feeds untrusted bytes to the beacon decoder twice: as received (must never panic, and
// must never accept without a valid MAC), and re-authenticated with the right key, which takes the fuzzer
// past the MAC into the parser; whatever the parser accepts must re-encode to the same bytes.
func FuzzDecodeBeacon(f *testing.F) {
	k, _ := DeriveKeys("garage", bytes.Repeat([]byte{7}, 32))
	good, _ := EncodeBeacon(Beacon{NameHash: k.NameHash, NodeID: "0123abcd", Addr: netip.MustParseAddrPort("10.0.0.1:7946"), Time: time.UnixMilli(1)}, k.Beacon)
	v6, _ := EncodeBeacon(Beacon{NameHash: k.NameHash, NodeID: "a-b", Addr: netip.MustParseAddrPort("[fd00::1]:1"), Time: time.UnixMilli(1 << 40)}, k.Beacon)
	f.Add(good)
	f.Add(v6)
	f.Add(good[:len(good)-macSize])
	f.Add([]byte("KLNB\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		if b, err := DecodeBeacon(p, k.NameHash, k.Beacon); err == nil {
			again, err := EncodeBeacon(b, k.Beacon)
			if err != nil || !bytes.Equal(again, p) {
				t.Fatalf("accepted beacon does not round-trip: %v", err)
			}
		}
		if len(p) < 13 {
			return
		}
		body := bytes.Clone(p)
		copy(body[5:13], k.NameHash[:])
		q := remac(body, k.Beacon)
		b, err := DecodeBeacon(q, k.NameHash, k.Beacon)
		if err != nil {
			return
		}
		again, err := EncodeBeacon(b, k.Beacon)
		if err != nil || !bytes.Equal(again, q) {
			t.Fatalf("parsed beacon %+v does not round-trip: %v", b, err)
		}
	})
}

// FuzzDecodeMeta: metadata comes from any key holder; decoding must not panic, and what it accepts must
// encode within the limit.
func FuzzDecodeMeta(f *testing.F) {
	f.Add([]byte(`{"id":"0123abcd","h":"kiln-0123abcd","p":"formed","i":"0123abcd","s":"x7u2"}`))
	f.Add([]byte(`{"id":"a"}`))
	f.Add([]byte(`{"id":"a","future":[1,2,{}]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		if _, err := EncodeMeta(m); err != nil {
			t.Fatalf("accepted meta %+v does not encode: %v", m, err)
		}
	})
}
