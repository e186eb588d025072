package election

import (
	"testing"
	"time"
)

// FuzzHandle plays a fuzzed script of messages and ticks against one node of three. The messages come from
// any key holder, so their fields are arbitrary; whatever they say, the acceptor's safety rules hold after
// every step: a decision never changes, the promise and the accepted ballot never go back, nothing is
// accepted above the promise, and every reply goes to the sender.
func FuzzHandle(f *testing.F) {
	f.Add([]byte{})
	// b prepares round 1, then asks a to accept b; a tick; c tells a that c was decided.
	f.Add([]byte{1, 0, 1, 0, 1, 1, 1, 2, 1, 0, 1, 1, 0x80, 0, 0, 0, 0, 0, 1, 5, 2, 0, 0, 2})
	f.Add([]byte{1, 0, 0, 0, 1, 0, 1, 2, 0, 0, 1, 0, 0x81, 0, 0, 0, 0, 0})
	ids := []string{"a", "b", "c", "z", ""}
	values := []string{"a", "b", "c", ""}
	f.Fuzz(func(t *testing.T, script []byte) {
		n := New("a", 3, Persistent{}, Config{})
		now := time.Unix(1000, 0)
		v := View{Alive: []string{"a", "b", "c"}}
		prev := n.Persistent()
		for ; len(script) >= 6; script = script[6:] {
			op := script[:6]
			now = now.Add(time.Duration(op[0]) * 100 * time.Millisecond)
			var out []Msg
			if op[1]&0x80 != 0 {
				v.Formed = op[1]&1 != 0
				out = n.Tick(now, v)
			} else {
				m := Msg{Kind: Kind(op[1] % 8), From: ids[op[2]%5], To: "a", ReqID: uint64(op[3] % 4),
					Ballot: Ballot{Round: uint64(op[4] % 6), ID: ids[(op[4]/6)%5]}, Value: values[op[5]%4],
					AcceptedBallot: Ballot{Round: uint64(op[5] / 4 % 6), ID: ids[op[2]/5%5]},
					Promised:       Ballot{Round: uint64(op[3] / 4 % 6), ID: ids[op[3]/24%5]}}
				out = n.Handle(now, m, v)
				for _, r := range out {
					if r.Kind == Promise || r.Kind == Accepted || r.Kind == Reject {
						if r.To != m.From {
							t.Fatalf("reply %+v to %+v goes elsewhere", r, m)
						}
					}
				}
			}
			for _, r := range out {
				if r.From != "a" {
					t.Fatalf("message %+v does not come from the node", r)
				}
			}
			p := n.Persistent()
			switch {
			case prev.Decided != "" && p.Decided != prev.Decided:
				t.Fatalf("decision changed from %q to %q", prev.Decided, p.Decided)
			case p.Promised.Less(prev.Promised):
				t.Fatalf("promise went back from %+v to %+v", prev.Promised, p.Promised)
			case p.AcceptedBallot.Less(prev.AcceptedBallot):
				t.Fatalf("accepted ballot went back from %+v to %+v", prev.AcceptedBallot, p.AcceptedBallot)
			case p.Promised.Less(p.AcceptedBallot):
				t.Fatalf("accepted %+v above the promise %+v", p.AcceptedBallot, p.Promised)
			case p.MaxRound < prev.MaxRound:
				t.Fatalf("max round went back from %d to %d", prev.MaxRound, p.MaxRound)
			}
			prev = p
		}
	})
}
