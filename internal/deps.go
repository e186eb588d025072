//go:build tools

// Package internal pins the project's dependencies before their first use.
package internal

import (
	_ "github.com/coreos/butane/config"
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/coreos/ignition/v2/config/v3_3"
	_ "github.com/diskfs/go-diskfs"
	_ "github.com/docker/docker/client"
	_ "github.com/hashicorp/memberlist"
	_ "github.com/spf13/cobra"
	_ "github.com/vbauerster/mpb/v8"
	_ "github.com/vishvananda/netlink"
	_ "gopkg.in/yaml.v3"
)
