package state

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/kiln-project/kiln/firstboot/member"
)

type named string

func (n named) Name() string                                    { return string(n) }
func (n named) Reconcile(context.Context, *State) (bool, error) { return false, nil }

// A pass runs firewall, swarm, gluster, VRRP in that order whatever order the slots were filled in, and
// skips empty slots.
func ExamplePass_Steps() {
	p := Pass{VRRP: named("vrrp"), Swarm: named("swarm"), Gluster: named("gluster")}
	for _, r := range p.Steps() {
		fmt.Println(r.Name())
	}
	// Output:
	// swarm
	// gluster
	// vrrp
}

func TestPassOrder(t *testing.T) {
	p := Pass{VRRP: named("vrrp"), Gluster: named("gluster"), Swarm: named("swarm"), StorageReport: named("gluster-report"),
		Firewall: named("firewall")}
	var got []string
	for _, r := range p.Steps() {
		got = append(got, r.Name())
	}
	if want := []string{"firewall", "gluster-report", "swarm", "gluster", "vrrp"}; !slices.Equal(got, want) {
		t.Fatalf("Steps = %v, want %v", got, want)
	}
	if n := len((Pass{Swarm: named("swarm")}).Steps()); n != 1 {
		t.Fatalf("a pass with one slot has %d steps", n)
	}
}

func TestReportWaitIsPendingAndStatus(t *testing.T) {
	var r Report
	r.Wait("gluster", "waiting for swarm")
	r.Set("swarm", "manager")
	if r.Pending["gluster"] != "waiting for swarm" || r.Status["gluster"] != "waiting for swarm" {
		t.Fatalf("Wait: pending %v status %v", r.Pending, r.Status)
	}
	if _, ok := r.Pending["swarm"]; ok || r.Status["swarm"] != "manager" {
		t.Fatalf("Set must not make a reconciler pending: pending %v status %v", r.Pending, r.Status)
	}
}

func TestFormationCloneIsDeep(t *testing.T) {
	f := &Formation{SwarmID: "s", ManagerAddrs: []string{"10.0.0.1:2377"}, GlusterPeers: map[string]string{"10.0.0.1": "u1"}}
	c := f.Clone()
	c.ManagerAddrs[0] = "changed"
	c.GlusterPeers["10.0.0.1"] = "changed"
	if f.ManagerAddrs[0] != "10.0.0.1:2377" || f.GlusterPeers["10.0.0.1"] != "u1" {
		t.Fatalf("changing the clone changed the original: %+v", f)
	}
	if (*Formation)(nil).Clone() != nil {
		t.Fatal("nil clones to nil")
	}
}

func TestRecordedAddrs(t *testing.T) {
	in := Inputs{Formation: &Formation{
		ManagerAddrs: []string{"10.0.0.3:2377", "10.0.0.1:2377", "bad"},
		GlusterPeers: map[string]string{"10.0.0.1": "u1", "10.0.0.2": "u2", "::ffff:10.0.0.4": "u4"},
	}}
	got := in.RecordedAddrs()
	want := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"),
		netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")}
	if !slices.Equal(got, want) {
		t.Fatalf("RecordedAddrs = %v, want %v", got, want)
	}
	if (&Inputs{}).RecordedAddrs() != nil {
		t.Fatal("no formation: no recorded addresses")
	}
}

// PeerAddrs lets in this node, every member that has not departed (alive or not), and the record's
// addresses, except those of departed members, unless an alive member holds that address now.
func TestPeerAddrs(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	s := &State{
		Inputs: Inputs{Formation: &Formation{
			ManagerAddrs: []string{"10.0.0.1:2377", "10.0.0.3:2377", "10.0.0.4:2377"},
			GlusterPeers: map[string]string{"10.0.0.1": "u1", "10.0.0.5": "u5", "10.0.0.6": "u6"}}},
		Observed: Observed{Self: member.Member{ID: "a", Addr: a("10.0.0.1"), Alive: true}, Members: []member.Member{
			{ID: "a", Addr: a("10.0.0.1"), Alive: true},
			{ID: "b", Addr: a("10.0.0.2")},                   // down, not long: stays
			{ID: "c", Addr: a("10.0.0.3"), Departed: true},   // departed: its address goes from the record too
			{ID: "d", Addr: a("10.0.0.4"), Departed: true},   // departed, but e holds its address now
			{ID: "e", Addr: a("10.0.0.4"), Alive: true},      // the replacement on the same address
			{ID: "f", Addr: a("10.0.0.5"), Departed: true}}}, // departed, in the pool map: goes
	}
	got := s.PeerAddrs()
	want := []netip.Addr{a("10.0.0.1"), a("10.0.0.2"), a("10.0.0.4"), a("10.0.0.6")}
	if !slices.Equal(got, want) {
		t.Fatalf("PeerAddrs = %v, want %v", got, want)
	}
}
