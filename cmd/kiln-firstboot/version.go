package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time: go build -ldflags "-X main.version=v0.3.0".
var version = "dev"

// versionString is version plus the VCS revision Go recorded, if any.
func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
	}
	return v
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the agent's version and the image's /usr/lib/kiln/image.json",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Println("kiln-firstboot", versionString())
			if b, err := os.ReadFile("/usr/lib/kiln/image.json"); err == nil {
				fmt.Printf("image: %s\n", b)
			}
			return nil
		},
	}
}
