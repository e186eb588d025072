// Package identity derives this node's stable id and hostname from its hardware, so that a reimaged or
// reflashed node comes back as the same cluster member.
package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kiln-project/kiln/internal/files"
)

// Paths inside a node (docs/design.md); Options.Root prefixes them for tests.
const (
	ProductUUIDPath = "/sys/class/dmi/id/product_uuid"
	NetClassPath    = "/sys/class/net"
	PersistPath     = "/var/lib/kiln/node-id"
)

// Source says where an id came from.
type Source string

const (
	SourceDMI       Source = "dmi"       // SMBIOS system UUID
	SourceMAC       Source = "mac"       // permanent MAC of the first physical NIC
	SourcePersisted Source = "persisted" // /var/lib/kiln/node-id, hardware gave nothing
	SourceRandom    Source = "random"    // first boot of hardware that gives nothing: generated and persisted
)

// Identity is this node's identity.
type Identity struct {
	// ID is lower-case hex: the SMBIOS UUID without dashes (32 digits) or the MAC without colons (12 digits).
	ID string
	// Hostname is the EC2 instance id on an EC2 instance (what the console and the API call it), else
	// HostnameFor(ID).
	Hostname string
	Source   Source
	// Previous is the persisted id when it differs from the hardware-derived one (the disk moved to other
	// hardware, or the VM got a new UUID); empty otherwise. The agent logs it; the hardware id wins.
	Previous string
}

// HostnameFor is the hostname of the node with id: "kiln-" + the first 8 hex digits of sha256(id). Hashing
// spreads ids that share a prefix (MACs share their vendor OUI, so the raw first digits would collide).
func HostnameFor(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "kiln-" + hex.EncodeToString(sum[:4])
}

// Options tune Get.
type Options struct {
	// Root prefixes every path (tests); "" or "/" on a node.
	Root string
	// Persist writes the id to PersistPath when it is missing or differs. Only the boot-time
	// `identity --apply` sets it; readers (status, the agent) don't write.
	Persist bool
	// WaitNIC is how long to wait for a physical NIC to appear when the SMBIOS UUID is unusable; 0: don't.
	WaitNIC time.Duration
	Log     *slog.Logger
}

// nicPollInterval is how often Get looks for a NIC while waiting: short against a boot, long against sysfs reads.
const nicPollInterval = 200 * time.Millisecond

// Get returns the node's identity: the SMBIOS UUID if it is a real one, else the first physical NIC's MAC,
// else the persisted id, else a random id that is then persisted.
func Get(opts Options) (*Identity, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	persistPath := filepath.Join(opts.Root, PersistPath)
	persisted, err := readPersisted(persistPath)
	if err != nil {
		log.Warn("ignoring unreadable persisted node id", "path", persistPath, "err", err)
	}

	id, src := fromDMI(opts.Root)
	if id == "" {
		// Early in boot the NIC driver may still be loading (udev coldplug runs in parallel): wait for it
		// rather than fall back to a random id that would then stick.
		deadline := time.Now().Add(opts.WaitNIC)
		for id, src = fromMAC(opts.Root); id == "" && time.Now().Before(deadline); id, src = fromMAC(opts.Root) {
			time.Sleep(nicPollInterval)
		}
	}
	var prev string
	switch {
	case id != "" && persisted != "" && persisted != id:
		prev = persisted
		log.Warn("hardware node id differs from the persisted one; using the hardware id",
			"id", id, "source", src, "persisted", persisted)
	case id == "" && persisted != "":
		id, src = persisted, SourcePersisted
	case id == "" && !opts.Persist:
		// An id nobody remembers would change on every call: refuse rather than hand out a fleeting one.
		return nil, errors.New("identity: no SMBIOS UUID, no physical NIC and no persisted id (run `kiln-firstboot identity --apply` as root first)")
	case id == "":
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("identity: random id: %w", err)
		}
		id, src = hex.EncodeToString(b[:]), SourceRandom
		log.Warn("no hardware id (SMBIOS UUID or physical NIC); generated a random one", "id", id)
	}
	if opts.Persist && id != persisted {
		if err := writeAtomic(persistPath, []byte(id+"\n")); err != nil {
			return nil, fmt.Errorf("identity: persist: %w", err)
		}
	}
	host := HostnameFor(id)
	if iid := EC2InstanceID(opts.Root); iid != "" {
		host = iid
	}
	return &Identity{ID: id, Hostname: host, Source: src, Previous: prev}, nil
}

// bogusUUIDs are SMBIOS UUIDs that many machines share: firmware placeholders ("To be filled by O.E.M.")
// and qemu's default when no -uuid is given (all zero).
var bogusUUIDs = map[string]bool{
	"00000000000000000000000000000000": true,
	"ffffffffffffffffffffffffffffffff": true,
	"03000200040005000006000700080009": true, // common AMI placeholder
	"12345678123456781234567812345678": true,
}

// fromDMI reads the SMBIOS system UUID (root-only readable on Linux).
func fromDMI(root string) (string, Source) {
	raw, err := os.ReadFile(filepath.Join(root, ProductUUIDPath))
	if err != nil {
		return "", ""
	}
	id := NormalizeUUID(string(raw))
	if id == "" || bogusUUIDs[id] {
		return "", ""
	}
	return id, SourceDMI
}

// NormalizeUUID turns "4C4C4544-0035-…" into 32 lower-case hex digits, or "" if s is not a UUID.
func NormalizeUUID(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return ""
	}
	h := strings.ReplaceAll(s, "-", "")
	if _, err := hex.DecodeString(h); err != nil || len(h) != 32 {
		return ""
	}
	return h
}

// fromMAC returns the permanent MAC of the first physical NIC by name. Physical means it has a device link in
// sysfs (virtual ones — lo, bridges, veth, docker0, vxlan — have none). Names are sorted so the choice is stable.
func fromMAC(root string) (string, Source) {
	dir := filepath.Join(root, NetClassPath)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", ""
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(dir, name, "device")); err != nil {
			continue
		}
		// addr_assign_type 0 is a permanent (burned-in) address; 1 random, 3 set by userspace.
		// Anything but 0 would change across boots or with config, so it is no identity.
		if t, err := os.ReadFile(filepath.Join(dir, name, "addr_assign_type")); err == nil && strings.TrimSpace(string(t)) != "0" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, name, "address"))
		if err != nil {
			continue
		}
		mac, err := net.ParseMAC(strings.TrimSpace(string(raw)))
		if err != nil || len(mac) != 6 || isZero(mac) {
			continue
		}
		return hex.EncodeToString(mac), SourceMAC
	}
	return "", ""
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// readPersisted reads the persisted id; missing is not an error, garbage is.
func readPersisted(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(raw))
	if _, err := hex.DecodeString(id); err != nil || (len(id) != 32 && len(id) != 12) || id != strings.ToLower(id) {
		return "", fmt.Errorf("%q is not a node id", id)
	}
	return id, nil
}

// writeAtomic writes data to path so that a crash leaves the old or the new id.
func writeAtomic(path string, data []byte) error { return files.Write(path, data, 0o644) }
