package host

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"

	"github.com/kiln-project/kiln/cloud/aws/awsfake"
	"github.com/kiln-project/kiln/cloud/aws/ec2node"
	"github.com/kiln-project/kiln/firstboot/config"
)

// TestEC2EndpointFromConfig: the config's aws.endpoint is where both EC2 users of the agent go, the tag peer
// source and the VIP reconciler, through one shared handle, and it wins over AWS_ENDPOINT_URL_EC2.
func TestEC2EndpointFromConfig(t *testing.T) {
	f := awsfake.New()
	tags := map[string]string{"kiln-cluster": "prod"}
	f.AddInstance(awsfake.Instance{ID: "i-0000000000000001a", State: "running", LocalIPv4: "10.0.1.11", MAC: "0a:00:00:00:00:1a",
		ENI: "eni-1a", Tags: tags})
	f.AddInstance(awsfake.Instance{ID: "i-0000000000000001b", State: "running", LocalIPv4: "10.0.1.12", MAC: "0a:00:00:00:00:1b",
		ENI: "eni-1b", Tags: tags})
	api := httptest.NewServer(f)
	defer api.Close()
	md := httptest.NewServer(f.IMDS("i-0000000000000001a"))
	defer md.Close()
	// Nothing listens there: a call that took the environment's endpoint would fail.
	t.Setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:1")
	t.Setenv("AWS_ACCESS_KEY_ID", "")

	c, err := config.Parse([]byte("cluster:\n  name: prod\n  key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n  vip: 10.0.1.100/24\n" +
		"  discovery:\n    aws_tag: kiln-cluster=prod\naws:\n  endpoint: " + api.URL + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := Machine{IMDSEndpoint: md.URL, ec2: &ec2Handles{}}
	ctx := context.Background()

	src, ok := m.peerSource(c).(*ec2node.TagPeers)
	if !ok {
		t.Fatalf("peer source %T, want the EC2 tag source", m.peerSource(c))
	}
	peers, err := src.Peers(ctx)
	if want := []netip.Addr{netip.MustParseAddr("10.0.1.11"), netip.MustParseAddr("10.0.1.12")}; err != nil || !slices.Equal(peers, want) {
		t.Fatalf("peers %v, %v; want %v", peers, err, want)
	}
	if f.Calls("DescribeInstances") != 1 {
		t.Errorf("DescribeInstances reached the configured endpoint %d times, want 1", f.Calls("DescribeInstances"))
	}

	// The VIP reconciler's handle is the same one: it assigns through the configured endpoint.
	node := m.aws(c)
	if node != src.Node {
		t.Error("the peer source and the VIP reconciler have two EC2 handles")
	}
	eni, err := node.ENI(ctx)
	if err != nil || eni != "eni-1a" {
		t.Fatalf("ENI %q, %v", eni, err)
	}
	if err := node.AssignPrivateIP(ctx, eni, c.Cluster.VIP.Addr()); err != nil {
		t.Fatal(err)
	}
	if got := f.Secondary("i-0000000000000001a"); !slices.Equal(got, []string{"10.0.1.100"}) {
		t.Errorf("secondary addresses %v, want the VIP", got)
	}
	if f.Calls("imds:meta-data/placement/region") != 1 {
		t.Errorf("region asked %d times, want once for the shared handle", f.Calls("imds:meta-data/placement/region"))
	}
}
