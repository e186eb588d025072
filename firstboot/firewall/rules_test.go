package firewall

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// TestRulesForJustBooted: right after a boot discovery sees only this node, but the members of the formation
// record must stay allowed, or swarm, gluster and VRRP traffic from them is dropped until membership converges.
func TestRulesForJustBooted(t *testing.T) {
	self := member.Member{ID: "a", Addr: netip.MustParseAddr("10.77.0.11"), Alive: true}
	s := &state.State{Inputs: state.Inputs{Subnet: netip.MustParsePrefix("10.77.0.0/24"), Formation: &state.Formation{
		GlusterPeers: map[string]string{"10.77.0.11": "u1", "10.77.0.12": "u2"},
		ManagerAddrs: []string{"10.77.0.13:2377"},
	}}, Observed: state.Observed{Self: self, Members: []member.Member{self}}}
	r := New(nil, Options{}, nil)
	got := r.RulesFor(s).Members
	for _, want := range []string{"10.77.0.11", "10.77.0.12", "10.77.0.13"} {
		if !slices.Contains(got, netip.MustParseAddr(want)) {
			t.Errorf("members %v lack recorded %s", got, want)
		}
	}
}
