package lab

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestUpValidation(t *testing.T) {
	root := t.TempDir()
	img := filepath.Join(root, "node.raw")
	if err := os.WriteFile(img, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		o    Options
		want []string
	}{
		"missing image": {Options{Image: filepath.Join(root, "nope.raw")}, []string{"image:", "no such file"}},
		"no image":      {Options{}, []string{"image: not set"}},
		"bad values": {Options{Image: img, Name: "Bad_Name", Nodes: -1, MemoryMiB: 10, CPUs: -2, DiskGiB: -1, DataDiskGiB: -3, Accel: "hvf"},
			[]string{"lab name", "nodes:", "memory:", "cpus:", "disk:", "data-disk:", "accel:"}},
		"bad config":                          {Options{Image: img, ClusterConfig: []byte("clusterr: {}\n")}, []string{`unknown key "clusterr"`}},
		"pxe without its directory or config": {Options{Boot: BootPXE, PXEDir: root}, []string{"pxe-dir:", "no pxe.json", "config: boot pxe needs a cluster config"}},
		"unknown boot and firmware":           {Options{Image: img, Boot: "usb", Firmware: "coreboot"}, []string{`boot: unknown "usb"`, `firmware: unknown "coreboot"`}},
		"bios boots only from the network":    {Options{Image: img, Firmware: "bios"}, []string{"firmware: bios boots only --boot pxe"}},
		"ec2 takes no fw_cfg config": {Options{Image: img, EC2: true, ClusterConfig: []byte("cluster: {}\n")},
			[]string{"config: an EC2 lab's nodes read their config from user-data"}},
		"ec2 boots from disk": {Options{Boot: BootPXE, PXEDir: root, EC2: true}, []string{"ec2: disk boot only"}},
	} {
		t.Run(name, func(t *testing.T) {
			tc.o.Root = root
			_, err := Up(context.Background(), tc.o)
			if err == nil {
				t.Fatal("want error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestUpRefusesExistingLab(t *testing.T) {
	root := t.TempDir()
	img := filepath.Join(root, "node.raw")
	if err := os.WriteFile(img, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "demo"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := saveState(filepath.Join(root, "demo"), State{Version: stateVersion, Name: "demo"}); err != nil {
		t.Fatal(err)
	}
	_, err := Up(context.Background(), Options{Root: root, Name: "demo", Image: img, Accel: "tcg"})
	if err == nil || !strings.Contains(err.Error(), `lab "demo" already exists`) {
		t.Fatalf("got %v, want an already-exists error", err)
	}
}

func TestOpenAndUnknownNode(t *testing.T) {
	root := t.TempDir()
	if _, err := Open(root, "ghost", nil); !errors.Is(err, ErrNoLab) {
		t.Fatalf("open missing lab: got %v, want ErrNoLab", err)
	}
	dir := filepath.Join(root, "demo")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st := State{Version: stateVersion, Name: "demo", Image: "/img.raw", MemoryMiB: 1536, CPUs: 1, DiskGiB: 8,
		Accel: "tcg", NextHardware: 3, Nodes: []NodeState{newNode("demo", 1, 1), newNode("demo", 2, 2)}}
	st.Nodes[1].Partition = PartitionPeers
	if err := saveState(dir, st); err != nil {
		t.Fatal(err)
	}
	l, err := Open(root, "demo", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := l.State()
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != st.Name || len(got.Nodes) != 2 || got.Nodes[1] != st.Nodes[1] || got.NextHardware != 3 {
		t.Errorf("state round trip: got %+v, want %+v", got, st)
	}
	if _, err := l.Node("node9"); err == nil || !strings.Contains(err.Error(), `unknown node "node9" (nodes: [node1 node2])`) {
		t.Errorf("unknown node: got %v", err)
	}
}

func TestHardwareIsStableAndDistinct(t *testing.T) {
	seen := map[string]bool{}
	for hw := 1; hw <= maxHardware; hw++ {
		mac, uuid, addr := hardware("demo", hw)
		mac2, uuid2, _ := hardware("demo", hw)
		if mac != mac2 || uuid != uuid2 {
			t.Fatal("hardware not deterministic")
		}
		for _, v := range []string{mac, uuid, addr} {
			if seen[v] {
				t.Fatalf("hardware %d repeats %s", hw, v)
			}
			seen[v] = true
		}
	}
	if _, _, addr := hardware("demo", 1); addr != "10.77.0.11" {
		t.Errorf("hardware 1 address %s, want 10.77.0.11", addr)
	}
	ids := map[string]bool{}
	for hw := 1; hw <= maxHardware; hw++ {
		id := InstanceID("demo", hw)
		if id != InstanceID("demo", hw) || !regexp.MustCompile(`^i-[0-9a-f]{17}$`).MatchString(id) || ids[id] || id == InstanceID("other", hw) {
			t.Fatalf("hardware %d: instance id %q not a stable, distinct EC2 instance id", hw, id)
		}
		ids[id] = true
	}
	n := newNode("demo", 2, 7)
	if n.Name != "node2" || n.Tap != "tap2" || n.Address != "10.77.0.17" {
		t.Errorf("newNode: %+v", n)
	}
}

func TestNodeConfig(t *testing.T) {
	in := []byte("cluster:\n  name: garage\n  size: 3\nssh_authorized_keys: [\"ssh-ed25519 AAAA user\"]\n")
	b, err := nodeConfig(in, "ssh-ed25519 BBBB kiln-lab-demo\n")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Cluster map[string]any `yaml:"cluster"`
		Keys    []string       `yaml:"ssh_authorized_keys"`
	}
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Cluster["name"] != "garage" || got.Cluster["size"] != 3 {
		t.Errorf("cluster section not passed through: %s", b)
	}
	if len(got.Keys) != 2 || got.Keys[1] != "ssh-ed25519 BBBB kiln-lab-demo" {
		t.Errorf("keys: %v", got.Keys)
	}
	only, err := nodeConfig(nil, "ssh-ed25519 BBBB k")
	if err != nil || strings.Contains(string(only), "cluster") || !strings.Contains(string(only), "ssh-ed25519 BBBB k") {
		t.Errorf("key-only config: %s %v", only, err)
	}
	if _, err := nodeConfig([]byte("ssh_authorized_keys: []\n"), ""); err == nil {
		t.Error("config without cluster section accepted")
	}
	// The agent's other sections pass through as they are, block scalars included.
	withIngress := []byte("cluster:\n  name: garage\ningress:\n  email: ops@example.org\n  ca_bundle: |\n    -----BEGIN CERTIFICATE-----\n    AAAA\n    -----END CERTIFICATE-----\n")
	b, err = nodeConfig(withIngress, "ssh-ed25519 BBBB k")
	if err != nil {
		t.Fatal(err)
	}
	var ing struct {
		Ingress map[string]string `yaml:"ingress"`
	}
	if err := yaml.Unmarshal(b, &ing); err != nil || ing.Ingress["email"] != "ops@example.org" ||
		ing.Ingress["ca_bundle"] != "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" {
		t.Errorf("ingress section not passed through (%v):\n%s", err, b)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"ls": "ls", "/var/x.txt": "/var/x.txt", "a b": "'a b'", "it's": `'it'\''s'`, "": "''"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
