package formation

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestParseSwarmNodes(t *testing.T) {
	out := "abc *\tkiln-1\tReady\tActive\tLeader\n" +
		"def\tkiln-2\tReady\tActive\tReachable\n" +
		"ghi\tkiln-3\tDown\tActive\tUnreachable\n" +
		"jkl\tkiln-4\tReady\tActive\t\n"
	ns, err := ParseSwarmNodes(out)
	if err != nil {
		t.Fatal(err)
	}
	var ready []string
	for _, n := range ns {
		if n.ReadyManager() {
			ready = append(ready, n.Hostname)
		}
	}
	if want := []string{"kiln-1", "kiln-2"}; !reflect.DeepEqual(ready, want) {
		t.Errorf("ready managers %v, want %v", ready, want)
	}
	if _, err := ParseSwarmNodes("a\tb\n"); err == nil {
		t.Error("short line accepted")
	}
}

// A real `gluster volume info data` of glusterfs 10 (bookworm), addresses as the agent names bricks.
const volumeInfo = `
Volume Name: data
Type: Replicate
Volume ID: 5f0e6c1a-7d4b-4f0e-9d51-2c1a3a9b8e11
Status: Started
Snapshot Count: 0
Number of Bricks: 1 x 3 = 3
Transport-type: tcp
Bricks:
Brick1: 10.77.0.11:/var/lib/kiln/bricks/data
Brick2: 10.77.0.12:/var/lib/kiln/bricks/data
Brick3: 10.77.0.13:/var/lib/kiln/bricks/data
Options Reconfigured:
cluster.granular-entry-heal: on
storage.fips-mode-rchecksum: on
transport.address-family: inet
nfs.disable: on
performance.client-io-threads: off
`

func TestParseVolumeInfo(t *testing.T) {
	v, err := ParseVolumeInfo(volumeInfo)
	if err != nil {
		t.Fatal(err)
	}
	want := VolumeInfo{Name: "data", Type: "Replicate", Status: "Started", Bricks: []string{
		"10.77.0.11:/var/lib/kiln/bricks/data", "10.77.0.12:/var/lib/kiln/bricks/data", "10.77.0.13:/var/lib/kiln/bricks/data"},
		Options: map[string]string{"cluster.granular-entry-heal": "on", "storage.fips-mode-rchecksum": "on",
			"transport.address-family": "inet", "nfs.disable": "on", "performance.client-io-threads": "off"}}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("%+v, want %+v", v, want)
	}
	if _, err := ParseVolumeInfo("Volume data does not exist\n"); err == nil {
		t.Error("missing volume accepted")
	}
}

const volumeStatusXML = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>0</opRet>
  <opErrno>0</opErrno>
  <opErrstr/>
  <volStatus>
    <volumes>
      <volume>
        <volName>data</volName>
        <nodeCount>6</nodeCount>
        <node>
          <hostname>10.77.0.11</hostname>
          <path>/var/lib/kiln/bricks/data</path>
          <peerid>0b3c…</peerid>
          <status>1</status>
          <port>49152</port>
          <ports><tcp>49152</tcp><rdma>N/A</rdma></ports>
          <pid>1234</pid>
        </node>
        <node>
          <hostname>10.77.0.12</hostname>
          <path>/var/lib/kiln/bricks/data</path>
          <status>1</status>
          <port>49152</port>
        </node>
        <node>
          <hostname>10.77.0.13</hostname>
          <path>/var/lib/kiln/bricks/data</path>
          <status>0</status>
          <port>N/A</port>
        </node>
        <node>
          <hostname>Self-heal Daemon</hostname>
          <path>localhost</path>
          <status>1</status>
          <port>N/A</port>
        </node>
      </volume>
    </volumes>
  </volStatus>
</cliOutput>`

func TestParseVolumeStatusXML(t *testing.T) {
	bs, err := ParseVolumeStatusXML([]byte(volumeStatusXML))
	if err != nil {
		t.Fatal(err)
	}
	want := []BrickStatus{
		{Host: "10.77.0.11", Path: "/var/lib/kiln/bricks/data", Online: true, Port: "49152"},
		{Host: "10.77.0.12", Path: "/var/lib/kiln/bricks/data", Online: true, Port: "49152"},
		{Host: "10.77.0.13", Path: "/var/lib/kiln/bricks/data", Online: false, Port: "N/A"},
	}
	if !reflect.DeepEqual(bs, want) {
		t.Errorf("%+v\nwant %+v", bs, want)
	}
	failed := `<cliOutput><opRet>-1</opRet><opErrno>30800</opErrno><opErrstr>Volume data does not exist</opErrstr></cliOutput>`
	if _, err := ParseVolumeStatusXML([]byte(failed)); err == nil {
		t.Error("failed command accepted")
	}
}

func TestParsePoolList(t *testing.T) {
	out := "UUID\t\t\t\t\tHostname  \tState\n" +
		"8e0bd3f4-1d8b-4a7a-9c57-1f0a2b3c4d5e\t10.77.0.12\tConnected \n" +
		"a1b2c3d4-1d8b-4a7a-9c57-1f0a2b3c4d5e\tlocalhost \tConnected \n"
	got, err := ParsePoolList(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"8e0bd3f4-1d8b-4a7a-9c57-1f0a2b3c4d5e": "10.77.0.12", "a1b2c3d4-1d8b-4a7a-9c57-1f0a2b3c4d5e": "localhost"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%v, want %v", got, want)
	}
	u, err := ParseGlusterdUUID("UUID=a1b2c3d4-1d8b-4a7a-9c57-1f0a2b3c4d5e\noperating-version=100000\n")
	if err != nil || u != "a1b2c3d4-1d8b-4a7a-9c57-1f0a2b3c4d5e" {
		t.Errorf("glusterd.info uuid %q %v", u, err)
	}
}

func TestHoldsAddr(t *testing.T) {
	out := `1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever preferred_lft forever
2: enp0s2    inet 10.77.0.11/24 metric 1024 brd 10.77.0.255 scope global dynamic enp0s2\       valid_lft 3500sec
2: enp0s2    inet 10.77.0.254/24 scope global secondary enp0s2\       valid_lft forever preferred_lft forever
`
	if !HoldsAddr(out, netip.MustParseAddr("10.77.0.254")) {
		t.Error("VIP not seen")
	}
	if HoldsAddr(out, netip.MustParseAddr("10.77.0.25")) {
		t.Error("prefix of an address matched")
	}
}

func TestKeepalivedPeers(t *testing.T) {
	conf := `vrrp_instance kiln {
	state BACKUP
	unicast_src_ip 10.77.0.11
	unicast_peer {
		10.77.0.12
		10.77.0.13 # comment
	}
	virtual_ipaddress {
		10.77.0.254/24
	}
}`
	got, err := KeepalivedPeers(conf)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("10.77.0.12"), netip.MustParseAddr("10.77.0.13")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%v, want %v", got, want)
	}
}

func TestParseReplicas(t *testing.T) {
	tests := []struct {
		in            string
		running, want int
		bad           bool
	}{
		{in: "3/3", running: 3, want: 3},
		{in: "2/3 (max 1 per node)", running: 2, want: 3},
		{in: "3/3 (max 1 per node)", running: 3, want: 3},
		{in: "", bad: true},
		{in: "three", bad: true},
		{in: "x/3", bad: true},
	}
	for _, tc := range tests {
		r, d, err := ParseReplicas(tc.in)
		if (err != nil) != tc.bad || r != tc.running || d != tc.want {
			t.Errorf("ParseReplicas(%q) = %d, %d, %v", tc.in, r, d, err)
		}
	}
}
