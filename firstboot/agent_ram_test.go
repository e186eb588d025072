package firstboot

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/election"
	"github.com/kiln-project/kiln/firstboot/member"
)

// TestAgentWithVarInRAM: the lowest id keeps /var in RAM, so it neither proposes nor votes: the lowest voter
// initialises, the learner joins the swarm it made, and every node sees the learner as brickless. Its own
// status says it holds no brick, and it never promised anything.
func TestAgentWithVarInRAM(t *testing.T) {
	c := newCluster(t, 111)
	c.inRAM = map[string]string{"a1": "no local disk for kiln-state"}
	for i := range 3 {
		c.start(i)
	}
	waitUntil(t, 30*time.Second, "3 nodes ready in one swarm", c.converged)
	c.checkOneInit()
	if init := c.w.inits[0]; init != "b2" {
		t.Errorf("initialiser %s, want b2: the lowest id that votes", init)
	}
	for i := range 3 {
		st := c.status(i)
		if len(st.Members) != 3 || !st.Members[0].NoBrick || !st.Members[0].StateInRAM || st.Members[1].NoBrick || st.Members[2].NoBrick {
			t.Errorf("%s sees members %+v, want only a1 brickless", c.ids[i], st.Members)
		}
		if st.Election != "" {
			t.Errorf("%s: election line %q after the decision", c.ids[i], st.Election)
		}
	}
	if got, want := c.status(0).NoBrick, "no brick: /var is in RAM (no local disk for kiln-state)"; got != want {
		t.Errorf("a1 status NoBrick %q, want %q", got, want)
	}
	if got := c.status(1).NoBrick; got != "" {
		t.Errorf("b2 status NoBrick %q, want none", got)
	}
	var p election.Persistent
	if _, err := readJSON(filepath.Join(c.dirs[0], electionFile), &p); err != nil {
		t.Fatal(err)
	}
	if !p.Promised.IsZero() || p.AcceptedValue != "" || p.Decided != "b2" {
		t.Errorf("a1's election state %+v: want no promise, no acceptance, b2 learned", p)
	}
}

// TestAgentTooFewVoters: two of three nodes keep /var in RAM: no majority of the expected size can vote, so
// nobody initialises, and every status says why.
func TestAgentTooFewVoters(t *testing.T) {
	c := newCluster(t, 121)
	c.inRAM = map[string]string{"a1": "no local disk for kiln-state", "c3": "no local disk for kiln-state"}
	for i := range 3 {
		c.start(i)
	}
	waitUntil(t, 15*time.Second, "the voters' status to say what the election waits for", func() bool {
		return strings.HasPrefix(c.status(1).Election, "waiting for voters: a decision needs 2 alive members with /var on a disk, alive now: 1") &&
			strings.HasPrefix(c.status(0).Election, "not a voter (/var is in RAM)")
	})
	time.Sleep(3 * time.Second) // election rounds run every 250 ms: ample time to decide, were it allowed
	c.w.mu.Lock()
	inits := len(c.w.inits)
	c.w.mu.Unlock()
	if inits != 0 {
		t.Fatalf("swarm init ran %d times without a majority of voters", inits)
	}
}

func TestElectionLine(t *testing.T) {
	disk := func(id string) member.Member { return member.Member{ID: id, Alive: true} }
	ram := func(id string) member.Member { return member.Member{ID: id, Alive: true, StateInRAM: true} }
	tests := []struct {
		name    string
		members []member.Member
		self    bool
		want    string
	}{
		{"all on disks", []member.Member{disk("a"), disk("b"), disk("c")}, false, ""},
		{"one in RAM, two voters: enough", []member.Member{ram("a"), disk("b"), disk("c")}, false, ""},
		{"still discovering: not the voters' fault", []member.Member{disk("a")}, false, ""},
		{"two in RAM of three", []member.Member{ram("a"), disk("b"), ram("c")}, false,
			"waiting for voters: a decision needs 2 alive members with /var on a disk, alive now: 1 (members with /var in RAM do not vote)"},
		{"self in RAM", []member.Member{ram("a"), disk("b"), disk("c")}, true,
			"not a voter (/var is in RAM): learns the initialiser from the others; 2 of the 2 voters a decision needs are alive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := electionLine(tt.members, 3, tt.self); got != tt.want {
				t.Errorf("electionLine = %q, want %q", got, tt.want)
			}
		})
	}
}
