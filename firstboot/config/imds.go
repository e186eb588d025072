package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kiln-project/kiln/cloud/aws/imds"
	"github.com/kiln-project/kiln/internal/files"
)

// IMDSSourceName is the EC2 user-data source's name in status and errors.
const IMDSSourceName = "aws-imds"

// IMDSCachePath keeps the user-data config for the rest of the boot (see IMDS).
const IMDSCachePath = "/run/kiln/imds-config.yaml"

// dmiDir is where the kernel publishes the firmware's DMI strings.
const dmiDir = "/sys/class/dmi/id"

// IMDS is the cluster config as EC2 user-data, read from the instance metadata service (IMDSv2: token, then
// GET /latest/user-data). It is asked only on an EC2 instance (OnEC2) or when the image default asks for it
// (`sources: {aws_imds: true}`), so a machine elsewhere never waits for it; on EC2 it answers within
// milliseconds, and its client gives up after three 2-second tries.
//
// No user-data (404), empty user-data, or no answer is "no config here" with the reason (Skipped). User-data
// that is not a valid cluster config is an error, like any config found but broken: the instance was launched
// with user-data meant for it.
//
// A config read is kept at Cache for the rest of the boot, for the reason the URL source keeps its own: an
// agent restart must not fall back to a lower source when IMDS is briefly slow.
type IMDS struct {
	// Root prefixes /sys (tests); "" or "/" on a node.
	Root string
	// Endpoint is IMDS's base URL ("": 169.254.169.254).
	Endpoint string
	// Cache is where a config read is kept for the boot ("": not kept).
	Cache string
	// Image is the image default's path, read for sources.aws_imds.
	Image string
	// Log receives a line when the source is asked and gives no config; nil: none.
	Log *slog.Logger
}

func (IMDS) Name() string { return IMDSSourceName }

func (s IMDS) Load(ctx context.Context) ([]byte, error) {
	ec2, why := OnEC2(s.Root)
	if !ec2 && !imageAsksIMDS(s.Image) {
		return nil, fmt.Errorf("not an EC2 instance (%s) and the image does not ask for user-data: %w", why, fs.ErrNotExist)
	}
	if s.Cache != "" {
		if data, err := os.ReadFile(s.Cache); err == nil {
			return data, nil
		}
	}
	c := &imds.Client{Endpoint: s.Endpoint}
	data, err := c.Get(ctx, "user-data")
	var skip string
	switch {
	case errors.Is(err, imds.ErrNotFound):
		skip = "the instance has no user-data"
	case err != nil && errors.Is(ctx.Err(), context.Canceled):
		return nil, err // stopping: not "no config here"
	case err != nil:
		skip = err.Error()
	case len(bytes.TrimSpace(data)) == 0:
		skip = "the instance's user-data is empty"
	}
	if skip != "" {
		if s.Log != nil {
			s.Log.Info("config: no user-data config", "source", IMDSSourceName, "reason", skip)
		}
		return nil, &SkipError{Source: IMDSSourceName, Reason: skip}
	}
	if s.Cache != "" {
		if _, perr := Parse(data); perr == nil {
			// 0600: the config holds the cluster key. A failed write only costs a request next time.
			if err := files.Write(s.Cache, data, 0o600); err != nil && s.Log != nil {
				s.Log.Warn("config: keep the user-data config for this boot", "path", s.Cache, "err", err)
			}
		}
	}
	return data, nil
}

// OnEC2 reports whether the machine is an EC2 instance, by what its firmware says, and what it saw. Nitro
// instances (every current type) put "Amazon EC2" in the DMI system, board and BIOS vendor strings; older
// Xen instances say "Xen" there but carry a system UUID starting with "ec2" (product_uuid, readable by root
// only; /sys/hypervisor/uuid on PV) and "amazon" in the BIOS version. A UUID starting with "ec2" alone could
// be chance on any machine (1 in 4096), so it counts only beside a Xen or Amazon vendor.
func OnEC2(root string) (bool, string) {
	read := func(p string) string {
		b, _ := os.ReadFile(filepath.Join(root, p))
		return strings.TrimSpace(string(b))
	}
	sys, board, bios := read(dmiDir+"/sys_vendor"), read(dmiDir+"/board_vendor"), read(dmiDir+"/bios_vendor")
	for _, v := range []string{sys, board, bios} {
		if v == "Amazon EC2" {
			return true, "DMI vendor " + v
		}
	}
	uuid := strings.ToLower(read(dmiDir + "/product_uuid"))
	if uuid == "" {
		uuid = strings.ToLower(read("/sys/hypervisor/uuid"))
	}
	xen := strings.Contains(strings.ToLower(sys), "xen") || strings.Contains(strings.ToLower(read(dmiDir+"/bios_version")), "amazon")
	if xen && strings.HasPrefix(uuid, "ec2") {
		return true, "Xen with an ec2 system UUID"
	}
	if sys == "" {
		return false, "no DMI vendor"
	}
	return false, "DMI vendor " + sys
}

// imageAsksIMDS reports whether the image default's sources.aws_imds is true. Only that field is read, leniently:
// an image meant for EC2 may carry no cluster at all.
func imageAsksIMDS(path string) bool {
	if path == "" {
		return false
	}
	data, err := readLimited(path)
	if err != nil {
		return false
	}
	var f struct {
		Sources struct {
			AWSIMDS bool `yaml:"aws_imds"`
		} `yaml:"sources"`
	}
	return yaml.Unmarshal(data, &f) == nil && f.Sources.AWSIMDS
}
