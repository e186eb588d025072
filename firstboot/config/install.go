package config

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Install is the install section, read by the ISO installer (firstboot/install) and ignored by the agent:
//
//	install:
//	  disk: /dev/sda   # the disk to install onto; default: the first empty internal disk
//	  wipe: true       # write it although it holds data; default false
type Install struct {
	Disk string
	Wipe bool
}

type fileInstall struct {
	Disk string `yaml:"disk"`
	Wipe bool   `yaml:"wipe"`
}

// ParseInstall reads the install section of a config file (Parse has checked the rest).
func ParseInstall(data []byte) (Install, error) {
	var f struct {
		Install fileInstall `yaml:"install"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		return Install{}, err
	}
	d := f.Install.Disk
	if d != "" && (strings.ContainsAny(d, " \t\n") || !strings.HasPrefix(d, "/dev/") && strings.Contains(d, "/")) {
		return Install{}, fmt.Errorf("install.disk: %q is not a disk: want /dev/sda, sda or /dev/disk/by-id/…", d)
	}
	if f.Install.Wipe && d == "" {
		return Install{}, fmt.Errorf("install.wipe: true needs install.disk: only a disk named in the config is ever wiped")
	}
	return Install{Disk: d, Wipe: f.Install.Wipe}, nil
}
