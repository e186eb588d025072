package identity

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// SMBIOS fields EC2 fills (docs/aws.md). Nitro instances put the instance id in the baseboard's asset tag, so
// the node knows it without asking the instance metadata service, which may not be reachable yet at boot.
const (
	SysVendorPath     = "/sys/class/dmi/id/sys_vendor"
	BoardAssetTagPath = "/sys/class/dmi/id/board_asset_tag"
	// EC2Vendor is sys_vendor on EC2 (Nitro and Xen HVM instances alike).
	EC2Vendor = "Amazon EC2"
)

var instanceIDRE = regexp.MustCompile(`^i-[0-9a-f]{8,17}$`)

// OnEC2 reports whether the machine says it is an EC2 instance (SMBIOS system vendor); root prefixes the path.
func OnEC2(root string) bool {
	return readTrimmed(filepath.Join(root, SysVendorPath)) == EC2Vendor
}

// EC2InstanceID is the instance id ("i-0123456789abcdef0") of an EC2 Nitro instance, or "" on any other
// machine, including an EC2 instance whose asset tag does not hold one.
func EC2InstanceID(root string) string {
	if !OnEC2(root) {
		return ""
	}
	if tag := readTrimmed(filepath.Join(root, BoardAssetTagPath)); instanceIDRE.MatchString(tag) {
		return tag
	}
	return ""
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
