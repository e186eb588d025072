package ec2node_test

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kiln-project/kiln/cloud/aws/awsfake"
	"github.com/kiln-project/kiln/cloud/aws/ec2node"
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// TestTagPeers: the running instances with the cluster's tag are the peers; other clusters, other tags and
// stopped instances are not; a replacement instance appears after the next refresh.
func TestTagPeers(t *testing.T) {
	f := awsfake.New()
	f.Region = "eu-central-1"
	prod := map[string]string{"kiln-cluster": "prod"}
	f.AddInstance(awsfake.Instance{ID: "i-1", State: "running", LocalIPv4: "10.0.1.11", Tags: prod})
	f.AddInstance(awsfake.Instance{ID: "i-2", State: "running", LocalIPv4: "10.0.2.12", Tags: prod})
	f.AddInstance(awsfake.Instance{ID: "i-3", State: "stopped", LocalIPv4: "10.0.1.13", Tags: prod})
	f.AddInstance(awsfake.Instance{ID: "i-4", State: "running", LocalIPv4: "10.0.1.14", Tags: map[string]string{"kiln-cluster": "dev"}})
	f.AddInstance(awsfake.Instance{ID: "i-5", State: "running", LocalIPv4: "10.0.1.15"})
	api, md := httptest.NewServer(f), httptest.NewServer(f.IMDS("i-1"))
	defer api.Close()
	defer md.Close()
	n := ec2node.New(ec2node.Options{IMDSEndpoint: md.URL, Endpoint: api.URL,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")})
	src := &ec2node.TagPeers{Node: n, Key: "kiln-cluster", Value: "prod", Refresh: 50 * time.Millisecond}
	ctx := context.Background()
	got, err := src.Peers(ctx)
	if err != nil || !slices.Equal(got, addrs("10.0.1.11", "10.0.2.12")) {
		t.Fatalf("peers %v, %v", got, err)
	}
	if f.Calls("imds:meta-data/placement/region") != 1 {
		t.Fatal("the region did not come from IMDS")
	}

	// i-2 is terminated and replaced: within one refresh the new instance is a peer, with no config change.
	f.SetInstanceState("i-2", "terminated")
	f.AddInstance(awsfake.Instance{ID: "i-6", State: "running", LocalIPv4: "10.0.1.16", Tags: prod})
	if got, _ := src.Peers(ctx); !slices.Equal(got, addrs("10.0.1.11", "10.0.2.12")) {
		t.Fatalf("within the refresh interval the last list stands, got %v", got)
	}
	time.Sleep(60 * time.Millisecond)
	if got, err := src.Peers(ctx); err != nil || !slices.Equal(got, addrs("10.0.1.11", "10.0.1.16")) {
		t.Fatalf("after a refresh: %v, %v", got, err)
	}

	// A refused DescribeInstances names the permission and keeps the last list.
	f.Deny("ec2:DescribeInstances")
	time.Sleep(60 * time.Millisecond)
	got, err = src.Peers(ctx)
	if err == nil || !strings.Contains(err.Error(), "may not call ec2:DescribeInstances") || !slices.Equal(got, addrs("10.0.1.11", "10.0.1.16")) {
		t.Fatalf("denied: %v, %v", got, err)
	}

}
