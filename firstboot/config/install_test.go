package config

import (
	"strings"
	"testing"
)

func TestParseInstall(t *testing.T) {
	const base = "cluster:\n  name: garage\n  key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
	for _, c := range []struct {
		name, yaml string
		want       Install
		err        string
	}{
		{"none", base, Install{}, ""},
		{"disk and wipe", base + "install:\n  disk: /dev/sda\n  wipe: true\n", Install{Disk: "/dev/sda", Wipe: true}, ""},
		{"kernel name", base + "install: {disk: nvme0n1}\n", Install{Disk: "nvme0n1"}, ""},
		{"by-id", base + "install: {disk: /dev/disk/by-id/ata-X}\n", Install{Disk: "/dev/disk/by-id/ata-X"}, ""},
		{"wipe without disk", base + "install: {wipe: true}\n", Install{}, "needs install.disk"},
		{"not a disk", base + "install: {disk: a/b}\n", Install{}, "not a disk"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The agent reads the same file: the install section must not make it invalid.
			if _, err := Parse([]byte(c.yaml)); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got, err := ParseInstall([]byte(c.yaml))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("ParseInstall = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
	if _, err := Parse([]byte(base + "install: {disk: /dev/sda, wype: true}\n")); err == nil {
		t.Error("a misspelt install key must fail Parse")
	}
}
