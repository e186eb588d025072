package discovery

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kiln-project/kiln/firstboot/member"
)

// A key holder (here a member in its own right, "m3") cannot get a message accepted as another member's, and a
// reimaged member, back with a new node key after it was seen gone, is heard again.
func TestEnvelopesBindSenders(t *testing.T) {
	a := startNode(t, "a1", "127.0.0.41", testKey, nil)
	seed := []string{a.Addr().String()}
	b := startNode(t, "b2", "127.0.0.42", testKey, func(c *Config) { c.Peers = seed })
	m := startNode(t, "m3", "127.0.0.43", testKey, func(c *Config) { c.Peers = seed })
	for _, n := range []testNode{a, b, m} {
		waitFor(t, 10*time.Second, "3 members on "+n.cfg.NodeID, func() bool { return sameIDs(alive(n.Discovery), "a1", "b2", "m3") })
	}
	waitFor(t, 5*time.Second, "b2 to pin a1's key", func() bool { return b.KeyOf("a1").Equal(a.PublicKey()) })

	toB := &memberlist.Node{Name: "b2", Addr: b.Addr().Addr().AsSlice(), Port: b.Addr().Port()}
	forged := map[string][]byte{
		"signed with m3's key as a1": seal(m.cfg.NodeKey, m.keys.NameHash, "a1", time.Now(), []byte("forged")),
		"unsigned as a1":             append([]byte{2}, "a1forged"...),
	}
	for name, env := range forged {
		if err := m.ml.SendReliable(toB, env); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if err := m.Send("b2", []byte("genuine")); err != nil {
		t.Fatal(err)
	}
	// Messages on one stream arrive in order, but the three are separate streams: collect until the genuine one.
	deadline := time.After(10 * time.Second)
	for got := false; !got; {
		select {
		case msg := <-b.Messages():
			if string(msg.Body) == "forged" {
				t.Fatalf("b2 accepted a forged message as %s's", msg.From)
			}
			got = msg.From == "m3" && string(msg.Body) == "genuine"
		case <-deadline:
			t.Fatal("m3's own message never arrived")
		}
	}
	// The log names the claimed sender (once a minute per sender: the second forgery is counted, not logged).
	waitFor(t, 5*time.Second, "a forgery logged as dropped", func() bool {
		return strings.Contains(b.log.String(), `msg="dropped message" component=discovery from=a1 err=`)
	})

	// A new key for a live member is refused.
	_, other, _ := ed25519.GenerateKey(nil)
	b.mu.Lock()
	b.pin("a1", other.Public().(ed25519.PublicKey), true)
	b.mu.Unlock()
	if !b.KeyOf("a1").Equal(a.PublicKey()) {
		t.Fatal("a live member's pinned key was replaced")
	}

	// a1 is reimaged: gone, then back at its address with a new key.
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a1 seen down", func() bool { return sameIDs(alive(b.Discovery), "b2", "m3") })
	a2 := startNode(t, "a1", "127.0.0.41", testKey, func(c *Config) { c.Peers = []string{b.Addr().String()} })
	waitFor(t, 15*time.Second, "b2 to pin a1's new key", func() bool { return b.KeyOf("a1").Equal(a2.PublicKey()) })
	if err := a2.Send("b2", []byte("back")); err != nil {
		t.Fatal(err)
	}
	deadline = time.After(10 * time.Second)
	for got := false; !got; {
		select {
		case msg := <-b.Messages():
			got = msg.From == "a1" && string(msg.Body) == "back"
		case <-deadline:
			t.Fatal("the reimaged a1's message never arrived")
		}
	}
}

// A message that arrives before its sender's metadata (memberlist delivers messages and metadata in separate
// packets) is held and opened once the sender's key is pinned; one signed with another key is still dropped,
// and the hold keeps at most earlyMax messages.
func TestEarlyMessagesWaitForTheKey(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	_, otherKey, _ := ed25519.GenerateKey(nil)
	d := &Discovery{cfg: Config{NodeID: "b2", MessageWindow: time.Minute}, log: slog.New(slog.DiscardHandler),
		msgs: make(chan Message, 64), known: map[string]Peer{}, pins: map[string]ed25519.PublicKey{}, rejected: newThrottle(time.Minute)}
	now := time.Now()
	send := func(k ed25519.PrivateKey, body string) {
		t.Helper()
		if _, _, ok := d.openMessage(seal(k, d.keys.NameHash, "a1", now, []byte(body)), now); ok {
			t.Fatalf("%q opened before a1's key was known", body)
		}
	}
	send(key, "propose")
	send(otherKey, "forged")
	for i := range earlyMax {
		send(key, fmt.Sprintf("filler %d", i))
	}
	if len(d.msgs) != 0 {
		t.Fatalf("%d messages delivered before a1's key was known", len(d.msgs))
	}
	d.mu.Lock()
	d.pin("a1", pub, false)
	d.mu.Unlock()
	var got []string
	for len(d.msgs) > 0 {
		m := <-d.msgs
		if m.From != "a1" {
			t.Errorf("message from %q", m.From)
		}
		got = append(got, string(m.Body))
	}
	// The oldest two (the proposal and the forgery) went to make room; the forgery would have failed anyway.
	if len(got) != earlyMax || got[0] != "filler 0" || got[earlyMax-1] != fmt.Sprintf("filler %d", earlyMax-1) {
		t.Fatalf("released %d messages %q, want filler 0..%d", len(got), got, earlyMax-1)
	}
	if len(d.early) != 0 {
		t.Errorf("%d messages still held after release", len(d.early))
	}

	// A message for a live member whose key is pinned is never held: a wrong signature is final.
	d.known["a1"] = Peer{Member: member.Member{ID: "a1", Alive: true}}
	if _, _, ok := d.openMessage(seal(otherKey, d.keys.NameHash, "a1", now, []byte("forged")), now); ok || len(d.early) != 0 {
		t.Fatalf("a forgery for a live member was opened (%v) or held (%d)", ok, len(d.early))
	}
	// And a proposal alone is released as it came.
	send2 := seal(key, d.keys.NameHash, "c3", now, []byte("propose"))
	if _, _, ok := d.openMessage(send2, now); ok {
		t.Fatal("c3's message opened before its key was known")
	}
	d.mu.Lock()
	d.pin("c3", pub, false)
	d.mu.Unlock()
	if m := <-d.msgs; m.From != "c3" || string(m.Body) != "propose" {
		t.Fatalf("released %s %q, want c3's proposal", m.From, m.Body)
	}
}
