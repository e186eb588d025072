package awsvip

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/cloud/aws/awsfake"
	"github.com/kiln-project/kiln/cloud/aws/ec2node"
	"github.com/kiln-project/kiln/firstboot/state"
)

// node is one instance's agent side: its EC2 handle (IMDS of its own, the role's credentials from it) and
// whether its interface carries the VIP.
type node struct {
	id    string
	holds bool
	r     *Reconciler
}

func newNodes(t *testing.T, f *awsfake.Fake, ids ...string) []*node {
	t.Helper()
	// Credentials come from the instance role through IMDS, as on a node: no environment, no shared files.
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	api := httptest.NewServer(f)
	t.Cleanup(api.Close)
	var out []*node
	for i, id := range ids {
		md := httptest.NewServer(f.IMDS(id))
		t.Cleanup(md.Close)
		f.AddInstance(awsfake.Instance{ID: id, State: "running", LocalIPv4: "10.0.1." + string(rune('1'+i)), MAC: "0a:00:00:00:00:0" + string(rune('1'+i)),
			ENI: "eni-" + id, Tags: map[string]string{"kiln-cluster": "prod"}})
		n := &node{id: id}
		ec2 := ec2node.New(ec2node.Options{IMDSEndpoint: md.URL, Endpoint: api.URL})
		n.r = New(ec2, func(dev string, vip netip.Addr) (bool, error) { return n.holds, nil }, slog.New(slog.DiscardHandler))
		n.r.backoff = time.Millisecond
		out = append(out, n)
	}
	return out
}

func pass(t *testing.T, n *node) (*state.State, bool, error) {
	t.Helper()
	s := &state.State{Inputs: state.Inputs{VIP: netip.MustParsePrefix("10.0.1.100/24"), Interface: "ens5"}}
	changed, err := n.r.Reconcile(context.Background(), s)
	return s, changed, err
}

func TestVIPFollowsTheHolder(t *testing.T) {
	f := awsfake.New()
	nodes := newNodes(t, f, "i-a", "i-b")
	a, b := nodes[0], nodes[1]

	a.holds = true
	if _, changed, err := pass(t, a); err != nil || !changed {
		t.Fatalf("first pass on the holder: changed %v, %v", changed, err)
	}
	if got := f.Secondary("i-a"); !slices.Equal(got, []string{"10.0.1.100"}) {
		t.Fatalf("i-a's secondary addresses %v", got)
	}
	s, changed, err := pass(t, a)
	if err != nil || changed {
		t.Fatalf("second pass: changed %v, %v (EC2 already has it)", changed, err)
	}
	if line := s.Status[Name]; !strings.Contains(line, "on eni-i-a; last assignment to eni-i-a at ") {
		t.Fatalf("status %q", line)
	}
	assigns := f.Calls("AssignPrivateIpAddresses")

	// keepalived moved the VIP to b: b's pass takes it over in EC2; a, no longer holding, does nothing.
	a.holds, b.holds = false, true
	if s, changed, err := pass(t, a); err != nil || changed || !strings.Contains(s.Status[Name], "not the VIP holder") {
		t.Fatalf("old holder: changed %v, %v, %q", changed, err, s.Status[Name])
	}
	if _, changed, err := pass(t, b); err != nil || !changed {
		t.Fatalf("new holder: changed %v, %v", changed, err)
	}
	if got, old := f.Secondary("i-b"), f.Secondary("i-a"); !slices.Equal(got, []string{"10.0.1.100"}) || len(old) != 0 {
		t.Fatalf("after the move: i-b %v, i-a %v", got, old)
	}
	if n := f.Calls("AssignPrivateIpAddresses"); n != assigns+1 {
		t.Fatalf("%d assignments for one move", n-assigns)
	}
}

func TestVIPAssignmentRetriesAndReports(t *testing.T) {
	f := awsfake.New()
	a := newNodes(t, f, "i-a")[0]
	a.holds = true

	// Throttling is retried (by the SDK and by the reconciler's own attempts).
	f.Throttle(4, "ec2:AssignPrivateIpAddresses")
	if _, changed, err := pass(t, a); err != nil || !changed {
		t.Fatalf("throttled: changed %v, %v", changed, err)
	}

	// A refused permission fails the pass with an error naming it and the last good assignment.
	f.Deny("ec2:AssignPrivateIpAddresses")
	b := newNodes(t, f, "i-b")[0]
	b.holds = true
	_, _, err := pass(t, b)
	if err == nil || !strings.Contains(err.Error(), "may not call ec2:AssignPrivateIpAddresses") || !strings.Contains(err.Error(), "last assignment none by this agent") {
		t.Fatalf("denied: %v", err)
	}
	if got := f.Secondary("i-a"); !slices.Equal(got, []string{"10.0.1.100"}) {
		t.Fatalf("a refused assignment moved the VIP: i-a %v", got)
	}
}

func TestNoVIPNoCalls(t *testing.T) {
	f := awsfake.New()
	a := newNodes(t, f, "i-a")[0]
	if _, changed, err := pass(t, a); err != nil || changed {
		t.Fatalf("not holding: changed %v, %v", changed, err)
	}
	s := &state.State{}
	if _, err := a.r.Reconcile(context.Background(), s); err != nil || s.Status[Name] != "no VIP configured" {
		t.Fatalf("no VIP: %v %q", err, s.Status[Name])
	}
	if n := f.Calls("imds:meta-data/placement/region") + f.Calls("DescribeNetworkInterfaces"); n != 0 {
		t.Fatalf("%d AWS calls from a node that does not hold the VIP", n)
	}
}
