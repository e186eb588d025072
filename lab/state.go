package lab

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/lab/qemu"
)

// Network layout, the same in every lab: each lab has its own namespace, so equal subnets never meet.
const (
	// Subnet is the lab's private network.
	Subnet = "10.77.0.0/24"
	// HostCIDR is the lab host's address on the bridge, from which kiln reaches the nodes.
	HostCIDR = "10.77.0.1/24"
	// Bridge is the bridge inside the namespace.
	Bridge = "br0"
	// firstHostNumber offsets hardware serials into the subnet: hardware 1 gets 10.77.0.11.
	firstHostNumber = 10
	// maxHardware keeps addresses inside the /24 (10+240 = .250) and away from the broadcast address.
	maxHardware = 240
)

// stateVersion is bumped when State changes incompatibly.
const stateVersion = 1

// State is everything a lab is, persisted as state.json in its directory. It is written before each resource is
// created, so `down` can clean up after a crash at any point.
type State struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
	// Image is the absolute path of the raw image every node disk is an overlay of.
	Image string `json:"image,omitempty"`
	// Boot is BootDisk or BootPXE ("" in labs made before netboot: disk).
	Boot string `json:"boot,omitempty"`
	// PXEDir (absolute) is the pxe artifact directory a netbooted lab serves; KilnBin the kiln binary that
	// serves it.
	PXEDir  string `json:"pxe_dir,omitempty"`
	KilnBin string `json:"kiln_bin,omitempty"`
	// Firmware is qemu.FirmwareUEFI or qemu.FirmwareBIOS ("": UEFI).
	Firmware  qemu.Firmware `json:"firmware,omitempty"`
	MemoryMiB int           `json:"memory_mib"`
	CPUs      int           `json:"cpus"`
	DiskGiB   int           `json:"disk_gib"`
	// DataDiskGiB is the size of every node's second, blank disk; 0: none.
	DataDiskGiB int `json:"data_disk_gib,omitempty"`
	// EC2: the nodes' firmware says EC2, with instance ids from InstanceID, and they get no fw_cfg config.
	EC2   bool       `json:"ec2,omitempty"`
	Accel qemu.Accel `json:"accel"`
	// NextHardware is the serial of the next new machine (add, replace): serials are never reused, so a replaced
	// node gets a new MAC, UUID and address.
	NextHardware int         `json:"next_hardware"`
	Nodes        []NodeState `json:"nodes"`
	CreatedAt    time.Time   `json:"created_at"`
}

// NodeState is one node: its lab identity (name, index, tap), its current hardware and its faults.
type NodeState struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
	// Tap is its bridge port; it stays with the index across replace.
	Tap string `json:"tap"`
	// Hardware is the serial its MAC, UUID and address derive from.
	Hardware int    `json:"hardware"`
	MAC      string `json:"mac"`
	UUID     string `json:"uuid"`
	Address  string `json:"address"`
	// Partition is "" (connected), "full" or "peers" (cut from the other nodes only).
	Partition string `json:"partition,omitempty"`
	// StartedAt is when qemu was last started; SerialOffset the serial log size then (boot markers are looked for
	// after it, the log being appended across boots).
	StartedAt    time.Time `json:"started_at,omitzero"`
	SerialOffset int64     `json:"serial_offset"`
}

// Partition modes.
const (
	PartitionFull  = "full"
	PartitionPeers = "peers"
)

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,23}$`)

// ValidName checks a lab name: it becomes the namespace name kiln-<name>, and namespace names end up in interface
// and path names, so keep them short and plain.
func ValidName(name string) error {
	if !nameRe.MatchString(name) {
		return fmt.Errorf("lab name %q: want [a-z0-9][a-z0-9-]{0,23}", name)
	}
	return nil
}

// Namespace is the network namespace of lab name.
func Namespace(name string) string { return "kiln-" + name }

// DefaultRoot is where labs live: ${XDG_STATE_HOME:-~/.local/state}/kiln/lab.
func DefaultRoot() string {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "/root"
		}
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(base, "kiln", "lab")
}

// hardware derives a machine's identity from the lab name and its serial: stable across runs of one lab, distinct
// between machines.
func hardware(lab string, serial int) (mac, uuid, addr string) {
	h := sha256.Sum256(fmt.Appendf(nil, "kiln-lab/%s/%d", lab, serial))
	mac = fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2])
	u := h[3:19]
	u[6] = u[6]&0x0f | 0x40 // version 4 shape
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	uuid = fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	ip := net.ParseIP("10.77.0.0").To4()
	ip[3] = byte(firstHostNumber + serial)
	return mac, uuid, ip.String()
}

// InstanceID is the EC2 instance id of lab's machine with hardware serial hw (an EC2 lab's nodes carry it in
// their SMBIOS asset tag): derived like the MAC, so a replaced node is a new instance, as on EC2.
func InstanceID(lab string, hw int) string {
	h := sha256.Sum256(fmt.Appendf(nil, "kiln-lab/%s/%d/ec2", lab, hw))
	return "i-" + fmt.Sprintf("%x", h[:9])[:17]
}

// newNode is node index idx on new hardware serial hw.
func newNode(lab string, idx, hw int) NodeState {
	mac, uuid, addr := hardware(lab, hw)
	return NodeState{Name: fmt.Sprintf("node%d", idx), Index: idx, Tap: fmt.Sprintf("tap%d", idx),
		Hardware: hw, MAC: mac, UUID: uuid, Address: addr}
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// ErrNoLab means no lab of that name exists.
var ErrNoLab = errors.New("no such lab")

func loadState(dir string) (State, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return State{}, fmt.Errorf("lab: %s: %w", dir, ErrNoLab)
	}
	if err != nil {
		return State{}, fmt.Errorf("lab: read state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("lab: decode %s: %w", statePath(dir), err)
	}
	if st.Version != stateVersion {
		return State{}, fmt.Errorf("lab: %s: state version %d, this kiln reads %d", statePath(dir), st.Version, stateVersion)
	}
	return st, nil
}

func saveState(dir string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := files.Write(statePath(dir), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("lab: state: %w", err)
	}
	return nil
}

// node finds a node by name.
func (st *State) node(name string) (*NodeState, error) {
	for i := range st.Nodes {
		if st.Nodes[i].Name == name {
			return &st.Nodes[i], nil
		}
	}
	var names []string
	for _, n := range st.Nodes {
		names = append(names, n.Name)
	}
	return nil, fmt.Errorf("lab %s: unknown node %q (nodes: %v)", st.Name, name, names)
}
