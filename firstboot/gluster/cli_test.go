package gluster

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cli", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseRealOutput(t *testing.T) {
	ps, err := ParsePeers(fixture(t, "peer-status.xml"))
	if err != nil || len(ps) != 0 {
		t.Fatalf("empty peer status: %v %v", ps, err)
	}
	ps, err = ParsePeers(fixture(t, "peer-status-two.xml"))
	if err != nil || len(ps) != 2 || !ps[0].InCluster() || ps[1].InCluster() || ps[0].Hostnames[0] != "10.77.0.12" {
		t.Fatalf("two peers: %+v %v", ps, err)
	}
	v, err := ParseVolumeInfo(fixture(t, "volinfo-missing.xml"))
	if err != nil || v != nil {
		t.Fatalf("missing volume: %+v %v", v, err)
	}
	v, err = ParseVolumeInfo(fixture(t, "volinfo-r3.xml"))
	if err != nil || v.Name != "r3" || v.Status != "Started" || v.Replica != 3 || len(v.Bricks) != 3 || v.Type != "Replicate" {
		t.Fatalf("r3: %+v %v", v, err)
	}
	v, err = ParseVolumeInfo(fixture(t, "volinfo.xml"))
	if err != nil || v.Options["network.ping-timeout"] != "5" || v.Bricks[0] != "10.99.6.11:/tmp/kglb/brick" {
		t.Fatalf("data: %+v %v", v, err)
	}
	hs, err := ParseHealInfo(fixture(t, "heal-r3.xml"))
	if err != nil || len(hs) != 3 || hs[0].Entries != 0 || hs[0].Status != "Connected" {
		t.Fatalf("heal: %+v %v", hs, err)
	}
	// The self-heal daemon is a line of its own, "localhost" for this node's; bricks are host and path.
	procs, err := ParseVolumeStatus(fixture(t, "volstatus-all.xml"), "r3")
	if err != nil || len(procs) != 4 || procs[3] != (Process{Host: SelfHealDaemon, Path: "localhost", PeerID: "a9593a6d-e5c7-49b1-85d4-ea0aeaa85585", Online: true}) ||
		procs[0].Host != "10.99.6.11" || procs[0].Path != "/tmp/kglb/r1" || !procs[0].Online {
		t.Fatalf("volume status r3: %+v %v", procs, err)
	}
	// gluster exits 0 with opRet -1: the XML carries the failure.
	for _, f := range []string{"probe-unreach.xml", "create-noforce.xml", "start-again.xml", "heal.xml"} {
		_, err := parse(fixture(t, f))
		var oe *OpError
		if !errors.As(err, &oe) || oe.Errstr == "" {
			t.Errorf("%s: err = %v, want an OpError", f, err)
		}
	}
	if _, err := parse(fixture(t, "probe-self.xml")); err != nil {
		t.Errorf("probe of self is success: %v", err)
	}
}

func FuzzParsers(f *testing.F) {
	entries, _ := os.ReadDir(filepath.Join("testdata", "cli"))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".xml") {
			f.Add(fixture(f, e.Name()))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ParsePeers(in)
		ParseVolumeInfo(in)
		ParseHealInfo(in)
		ParseVolumeStatus(in, "data")
	})
}
