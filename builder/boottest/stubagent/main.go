// Command stubagent stands in for kiln-firstboot in the boot test while ./cmd/kiln-firstboot does not build:
// it implements just what the image relies on at boot — `run` (logs, notifies systemd) and `ssh-keys USER`
// (prints root's keys from the qemu fw_cfg node config).
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/coreos/go-systemd/v22/daemon"
	"gopkg.in/yaml.v3"
)

const fwCfg = "/sys/firmware/qemu_fw_cfg/by_name/opt/kiln/config/raw"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kiln-firstboot run | ssh-keys USER")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		info, _ := os.ReadFile("/usr/lib/kiln/image.json")
		slog.Info("kiln-firstboot stub started", "image", string(info))
		if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
			slog.Error("sd_notify", "err", err)
		}
	case "ssh-keys":
		if len(os.Args) != 3 || os.Args[2] != "root" {
			return
		}
		data, err := os.ReadFile(fwCfg)
		if err != nil {
			return
		}
		var c struct {
			Keys []string `yaml:"ssh_authorized_keys"`
		}
		if err := yaml.Unmarshal(data, &c); err != nil {
			fmt.Fprintln(os.Stderr, "ssh-keys:", err)
			os.Exit(1)
		}
		for _, k := range c.Keys {
			fmt.Println(k)
		}
	default:
		os.Exit(2)
	}
}
