package aws_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/cloud/aws/awsfake"
	"github.com/kiln-project/kiln/firstboot/awsvip"
	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/labtest"
	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/test/formation"
)

// The lab's AWS, inside its namespace on the host side of the bridge: IMDS where every instance finds it,
// and the EC2 API at an address of the subnet, as a VPC interface endpoint is (the config's aws.endpoint).
const (
	imdsAddr    = "169.254.169.254"
	ec2Listen   = "10.77.0.1:8773"
	ec2Endpoint = "http://" + ec2Listen
	// tagKey is the tag the instances are launched with and the config's discovery.aws_tag looks for.
	tagKey = "kiln-cluster"
)

// Bounds: TCG guests on a 2-core host (see test/formation).
const (
	testTimeout     = 75 * time.Minute
	formTimeout     = 25 * time.Minute
	convergeTimeout = 5 * time.Minute
	swarmSettle     = 2 * time.Minute
	pollEvery       = 5 * time.Second
)

// vpcRules make the lab bridge behave like a VPC's network for what the nodes send each other: no broadcast and
// no multicast, except ARP and DHCP, which a VPC provides itself. So LAN beacons (UDP to the subnet's
// broadcast address) never arrive, and the nodes can find each other only through EC2. The counter on the
// beacon rule proves the beacons were sent and dropped.
const vpcRules = `table bridge kiln-vpc {
	chain forward {
		type filter hook forward priority -10; policy accept;
		ether type arp accept
		udp dport { 67, 68 } accept
		ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 udp dport 7947 counter drop comment "beacons"
		ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 counter drop comment "broadcast and multicast"
	}
}
`

// TestAWSLab is the proof of docs/aws.md's nodes on EC2: three lab nodes with no fw_cfg config whose firmware
// says EC2 (SMBIOS, the instance id in the asset tag), on a bridge that drops broadcast and multicast, read
// their cluster.yaml from user-data through IMDSv2 on 169.254.169.254, find each other by tag through the
// fake EC2 at the config's aws.endpoint, and form swarm, volume and VIP; the VIP holder assigns the VIP to its
// own interface in EC2. Then the holder is killed, and the fake EC2 shows the VIP on the new holder's interface.
func TestAWSLab(t *testing.T) {
	img := labtest.Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	fake := awsfake.New()
	fake.Region = "eu-central-1"
	name := labtest.Name("aws")
	cluster, err := config.New("aws-lab")
	if err != nil {
		t.Fatal(err)
	}
	cluster.Cluster.VIP = formation.VIP
	cluster.Cluster.Discovery.AWSTag = config.Tag{Key: tagKey, Value: cluster.Cluster.Name}
	cluster.Cluster.VIPAWS = true
	cluster.AWS.Endpoint = ec2Endpoint
	vip := cluster.Cluster.VIP.Addr()

	upAt := time.Now()
	l := labtest.Up(ctx, t, lab.Options{Name: name, Image: img, Nodes: 3, EC2: true,
		BeforeStart: func(ctx context.Context, l *lab.Lab) error { return startAWS(ctx, t, l, fake, cluster) },
	}, func(ctx context.Context, nodes []*lab.Node) string {
		return formation.Diagnose(ctx, nodes) + fakeReport(fake, nodes)
	})
	nodes, err := l.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{} // node name → instance id
	for _, n := range nodes {
		if ids[n.Name()], err = n.InstanceID(); err != nil {
			t.Fatal(err)
		}
	}
	step := func(name string, fn func(t *testing.T)) {
		if !t.Run(name, fn) {
			t.FailNow() // later steps build on this one
		}
	}

	step("formed", func(t *testing.T) {
		fctx, fcancel := context.WithTimeout(ctx, formTimeout)
		defer fcancel()
		seen, err := formation.WaitFormed(fctx, nodes, pollEvery)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			t.Logf("%s (%s): formed by +%s", n.Name(), ids[n.Name()], seen[n.Name()].Sub(upAt).Round(time.Second))
		}
		sts, errs := formation.Statuses(ctx, nodes)
		for _, n := range nodes {
			s := sts[n.Name()]
			if s == nil {
				t.Fatalf("%s: status: %v", n.Name(), errs[n.Name()])
			}
			// The config came from user-data, and the node is named by the instance id of its asset tag.
			if s.ConfigSource != config.IMDSSourceName || s.Cluster != cluster.Cluster.Name {
				t.Errorf("%s: cluster %q from %q, want %q from %s", n.Name(), s.Cluster, s.ConfigSource, cluster.Cluster.Name, config.IMDSSourceName)
			}
			if s.Hostname != ids[n.Name()] {
				t.Errorf("%s: hostname %q, want its instance id %s", n.Name(), s.Hostname, ids[n.Name()])
			}
			alive := 0
			for _, m := range s.Members {
				if m.Alive {
					alive++
				}
			}
			if alive != 3 || len(s.Members) != 3 {
				t.Errorf("%s: %d members, %d alive; want 3 alive", n.Name(), len(s.Members), alive)
			}
		}
		// The members found each other through EC2: beacons were sent and dropped, DescribeInstances was asked.
		dropped, err := beaconsDropped(ctx, l.Namespace())
		if err != nil {
			t.Fatal(err)
		}
		if dropped == 0 {
			t.Error("no beacon was dropped on the bridge: the rule that keeps LAN discovery out did not see the beacons")
		}
		if fake.Calls("DescribeInstances") == 0 {
			t.Error("the fake EC2 was never asked DescribeInstances: the peers did not come from the tag")
		}
		t.Logf("beacons dropped on the bridge: %d; EC2 calls: DescribeInstances %d; IMDS user-data reads %d",
			dropped, fake.Calls("DescribeInstances"), fake.Calls("imds:user-data"))
	})

	step("swarm and volume", func(t *testing.T) {
		want := slices.Sorted(maps.Values(ids))
		sctx, scancel := context.WithTimeout(ctx, swarmSettle)
		defer scancel()
		err := formation.WaitReadyManagers(sctx, nodes, want, pollEvery)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			out, err := formation.Exec(ctx, n, "gluster", "volume", "info", "data")
			if err != nil {
				t.Fatal(err)
			}
			v, err := formation.ParseVolumeInfo(out)
			if err != nil {
				t.Fatal(err)
			}
			if v.Type != "Replicate" || v.Status != "Started" || len(v.Bricks) != 3 {
				t.Errorf("%s: volume data %+v: want a started replica volume with 3 bricks", n.Name(), v)
			}
			if fs, err := formation.Exec(ctx, n, "findmnt", "-n", "-o", "FSTYPE", "/var/data"); err != nil || fs != "fuse.glusterfs" {
				t.Errorf("%s: /var/data is %q (%v), want the volume mounted", n.Name(), fs, err)
			}
		}
	})

	var holder *lab.Node
	step("vip assigned in EC2", func(t *testing.T) {
		holder = waitVIPInEC2(ctx, t, l, fake, nodes, ids, vip)
	})

	step("holder killed: the VIP moves in EC2", func(t *testing.T) {
		old := holder
		if err := old.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		killedAt := time.Now()
		survivors := slices.DeleteFunc(slices.Clone(nodes), func(n *lab.Node) bool { return n == old })
		holder = waitVIPInEC2(ctx, t, l, fake, survivors, ids, vip)
		t.Logf("%s killed; the VIP is on %s's interface in EC2 %s later", old.Name(), holder.Name(), time.Since(killedAt).Round(time.Second))
		if got := fake.Secondary(ids[old.Name()]); slices.Contains(got, vip.String()) {
			t.Errorf("the killed holder's interface still has the VIP in EC2: %v", got)
		}
	})
}

// startAWS is the lab's BeforeStart: the fake's instances (one per node: its instance id, address, MAC and
// interface, the cluster's tag, the user-data), the VPC rules on the bridge, IMDS on 169.254.169.254:80 and
// the EC2 endpoint, served until the test ends.
func startAWS(ctx context.Context, t *testing.T, l *lab.Lab, fake *awsfake.Fake, cluster *config.Config) error {
	pub, err := os.ReadFile(l.KeyPath() + ".pub")
	if err != nil {
		return err
	}
	c := *cluster
	c.SSHAuthorizedKeys = []string{strings.TrimSpace(string(pub))}
	userData, err := c.Marshal()
	if err != nil {
		return err
	}
	if _, err := config.Parse(userData); err != nil {
		return fmt.Errorf("user-data: %w", err)
	}
	nodes, err := l.Nodes()
	if err != nil {
		return err
	}
	for _, n := range nodes {
		id, err := n.InstanceID()
		if err != nil {
			return err
		}
		st, err := n.State()
		if err != nil {
			return err
		}
		fake.AddInstance(awsfake.Instance{ID: id, State: "running", LocalIPv4: st.Address, MAC: st.MAC,
			ENI: "eni-" + strings.TrimPrefix(id, "i-"), UserData: userData,
			Tags: map[string]string{tagKey: c.Cluster.Name, "Name": n.Name()}})
	}
	ns := l.Namespace()
	if _, err := netns.Exec(ctx, ns, nil, "ip", "addr", "add", imdsAddr+"/32", "dev", lab.Bridge); err != nil {
		return fmt.Errorf("IMDS address on the bridge: %w", err)
	}
	if _, err := netns.Exec(ctx, ns, []byte(vpcRules), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("VPC rules: %w", err)
	}
	var lns []net.Listener
	err = netns.Do(ns, func() error {
		for _, a := range []string{net.JoinHostPort(imdsAddr, "80"), ec2Listen} {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	})
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return fmt.Errorf("listen in %s: %w", ns, err)
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { done <- fake.Serve(sctx, ln) }()
	}
	t.Cleanup(func() {
		stop()
		for range lns {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	})
	return nil
}

// waitVIPInEC2 waits until exactly one of nodes carries the VIP, the fake EC2 has it as a secondary private
// address of that node's interface and of no other, and the node's aws-vip status names the interface and
// its last assignment. It returns the holder.
func waitVIPInEC2(ctx context.Context, t *testing.T, l *lab.Lab, fake *awsfake.Fake, nodes []*lab.Node, ids map[string]string, vip netip.Addr) *lab.Node {
	t.Helper()
	vctx, cancel := context.WithTimeout(ctx, convergeTimeout)
	defer cancel()
	var holder *lab.Node
	var line string
	err := formation.Poll(vctx, pollEvery, "the VIP on its holder's interface in EC2", func(ctx context.Context) (bool, string, error) {
		hs, err := formation.VIPHolders(ctx, nodes, vip)
		if err != nil {
			return false, err.Error(), nil
		}
		if len(hs) != 1 {
			return false, fmt.Sprintf("holders %v", hs), nil
		}
		holder = nil
		for _, n := range nodes {
			if n.Name() == hs[0] {
				holder = n
			}
		}
		var in []string
		for _, n := range nodes {
			if slices.Contains(fake.Secondary(ids[n.Name()]), vip.String()) {
				in = append(in, n.Name())
			}
		}
		if !slices.Equal(in, hs) {
			return false, fmt.Sprintf("%s holds the VIP; EC2 has it on the interfaces of %v", hs[0], in), nil
		}
		s, err := formation.AgentStatus(ctx, holder)
		if err != nil {
			return false, err.Error(), nil
		}
		eni := "eni-" + strings.TrimPrefix(ids[holder.Name()], "i-")
		line = s.Reconcilers[awsvip.Name]
		if !strings.Contains(line, "on "+eni) || !strings.Contains(line, "last assignment to "+eni+" at ") {
			return false, fmt.Sprintf("%s's %s status %q: want the VIP on %s and its last assignment", holder.Name(), awsvip.Name, line, eni), nil
		}
		// The VIP answers from the lab host, as the holder (once the lab host took the holder's gratuitous ARP).
		got, err := formation.SSH(ctx, l, vip.String(), nil, "hostname")
		if h := strings.TrimSpace(string(got)); err != nil || h != ids[holder.Name()] {
			return false, fmt.Sprintf("ssh %s answers as %q (%v), want the holder %s (%s)", vip, h, err, holder.Name(), ids[holder.Name()]), nil
		}
		return true, "", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("VIP %s on %s (%s); its status: %s: %s", vip, holder.Name(), ids[holder.Name()], awsvip.Name, line)
	return holder
}

// beaconsDropped reads the packet counter of the VPC rules' beacon drop.
func beaconsDropped(ctx context.Context, ns string) (uint64, error) {
	out, err := netns.Exec(ctx, ns, nil, "nft", "-j", "list", "table", "bridge", "kiln-vpc")
	if err != nil {
		return 0, err
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Comment string           `json:"comment"`
				Expr    []map[string]any `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return 0, fmt.Errorf("nft -j: %w", err)
	}
	for _, o := range doc.Nftables {
		if o.Rule == nil || o.Rule.Comment != "beacons" {
			continue
		}
		for _, e := range o.Rule.Expr {
			if c, ok := e["counter"].(map[string]any); ok {
				p, _ := c["packets"].(float64)
				return uint64(p), nil
			}
		}
	}
	return 0, errors.New("nft: no beacon counter in table bridge kiln-vpc")
}

// fakeReport is what the fake AWS saw, for a failed test's diagnostics.
func fakeReport(fake *awsfake.Fake, nodes []*lab.Node) string {
	var b strings.Builder
	b.WriteString("===== fake AWS =====\n")
	for _, c := range []string{"DescribeInstances", "DescribeNetworkInterfaces", "AssignPrivateIpAddresses", "imds:token", "imds:user-data",
		"imds:meta-data/iam/security-credentials/" + awsfake.Role} {
		fmt.Fprintf(&b, "calls %s: %d\n", c, fake.Calls(c))
	}
	for _, n := range nodes {
		id, _ := n.InstanceID()
		fmt.Fprintf(&b, "%s %s secondary addresses: %v\n", n.Name(), id, fake.Secondary(id))
	}
	return b.String()
}
