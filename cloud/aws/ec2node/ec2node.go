// Package ec2node is what a kiln node on EC2 asks EC2 about itself: the private addresses of the running
// instances that carry its cluster's tag (its peers where there is no multicast), and the VIP as a secondary
// private address of its own network interface. Credentials come from the environment or the instance role,
// the region and the interface from IMDS, all on first use, so a node that never needs EC2 never asks IMDS.
package ec2node

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/kiln-project/kiln/cloud/aws/awserr"
	"github.com/kiln-project/kiln/cloud/aws/imds"
)

// RequestTimeout bounds one EC2 request: the agent's pass must not hang on the network.
const RequestTimeout = 20 * time.Second

// Options configure a Node. Zero values are right on an instance.
type Options struct {
	// IMDSEndpoint is IMDS's base URL for the region, the interface and the role credentials ("": 169.254.169.254).
	IMDSEndpoint string
	// Endpoint sends EC2 calls to this URL (the config's aws.endpoint: a VPC interface endpoint); "" means
	// AWS_ENDPOINT_URL_EC2 from the environment, else the region's public endpoint.
	Endpoint string
	// Credentials replace the environment's and the instance role's (tests).
	Credentials aws.CredentialsProvider
}

// Node is this instance's handle on EC2.
type Node struct {
	opts Options
	md   *imds.Client
	http *http.Client

	// mu guards region, eni and creds: learned once, the credentials again before they expire.
	mu     sync.Mutex
	region string
	eni    string
	creds  aws.Credentials
}

// New returns a Node; nothing is asked until a method needs it.
func New(o Options) *Node {
	return &Node{opts: o, md: &imds.Client{Endpoint: o.IMDSEndpoint}, http: &http.Client{}}
}

// PeersByTag returns the private addresses of the running instances tagged key=value, this one included,
// sorted.
func (n *Node) PeersByTag(ctx context.Context, key, value string) ([]netip.Addr, error) {
	params := url.Values{"Filter.1.Name": {"tag:" + key}, "Filter.1.Value.1": {value},
		"Filter.2.Name": {"instance-state-name"}, "Filter.2.Value.1": {"running"}, "MaxResults": {"1000"}}
	var out []netip.Addr
	for {
		var page struct {
			Reservations []struct {
				Instances []struct {
					PrivateIP string `xml:"privateIpAddress"`
				} `xml:"instancesSet>item"`
			} `xml:"reservationSet>item"`
			NextToken string `xml:"nextToken"`
		}
		if err := n.call(ctx, "DescribeInstances", params, &page); err != nil {
			return nil, fmt.Errorf("ec2: instances tagged %s=%s: %w", key, value, awserr.Explain(err, "ec2:DescribeInstances"))
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				if a, err := netip.ParseAddr(i.PrivateIP); err == nil {
					out = append(out, a)
				}
			}
		}
		if page.NextToken == "" {
			break
		}
		params.Set("NextToken", page.NextToken)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// ENI returns the id of this instance's primary network interface (through IMDS: the interface of its MAC).
func (n *Node) ENI(ctx context.Context) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.eni != "" {
		return n.eni, nil
	}
	mac, err := n.md.String(ctx, "meta-data/mac")
	if err != nil {
		return "", fmt.Errorf("ec2: this instance's MAC from IMDS: %w", err)
	}
	eni, err := n.md.String(ctx, "meta-data/network/interfaces/macs/"+mac+"/interface-id")
	if err != nil {
		return "", fmt.Errorf("ec2: the interface of %s from IMDS: %w", mac, err)
	}
	n.eni = eni
	return eni, nil
}

// HasPrivateIP reports whether EC2 has ip among the private addresses of interface eni.
func (n *Node) HasPrivateIP(ctx context.Context, eni string, ip netip.Addr) (bool, error) {
	var out struct {
		ENIs []struct {
			IPs []struct {
				Addr string `xml:"privateIpAddress"`
			} `xml:"privateIpAddressesSet>item"`
		} `xml:"networkInterfaceSet>item"`
	}
	if err := n.call(ctx, "DescribeNetworkInterfaces", url.Values{"NetworkInterfaceId.1": {eni}}, &out); err != nil {
		return false, fmt.Errorf("ec2: describe %s: %w", eni, awserr.Explain(err, "ec2:DescribeNetworkInterfaces"))
	}
	for _, ni := range out.ENIs {
		for _, p := range ni.IPs {
			if p.Addr == ip.String() {
				return true, nil
			}
		}
	}
	return false, nil
}

// AssignPrivateIP makes ip a secondary private address of interface eni, taking it from whichever interface
// of the subnet holds it now (AllowReassignment): that is how the VPC learns which instance the VIP lives on.
func (n *Node) AssignPrivateIP(ctx context.Context, eni string, ip netip.Addr) error {
	var out struct{}
	err := n.call(ctx, "AssignPrivateIpAddresses", url.Values{"NetworkInterfaceId": {eni}, "PrivateIpAddress.1": {ip.String()},
		"AllowReassignment": {strconv.FormatBool(true)}}, &out)
	if err != nil {
		return fmt.Errorf("ec2: assign %s to %s: %w", ip, eni, awserr.Explain(err, "ec2:AssignPrivateIpAddresses"))
	}
	return nil
}

// TagPeers is a discovery peer source: the instances tagged Key=Value, asked at most once per Refresh
// (default 30 s); between asks, and when an ask fails, the last list stands.
type TagPeers struct {
	Node       *Node
	Key, Value string
	Refresh    time.Duration

	// mu guards last and asked.
	mu    sync.Mutex
	last  []netip.Addr
	asked time.Time
}

// Peers implements discovery.PeerSource.
func (t *TagPeers) Peers(ctx context.Context) ([]netip.Addr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	refresh := t.Refresh
	if refresh <= 0 {
		refresh = 30 * time.Second
	}
	if !t.asked.IsZero() && time.Since(t.asked) < refresh {
		return t.last, nil
	}
	t.asked = time.Now()
	peers, err := t.Node.PeersByTag(ctx, t.Key, t.Value)
	if err != nil {
		return t.last, err
	}
	t.last = peers
	return peers, nil
}
