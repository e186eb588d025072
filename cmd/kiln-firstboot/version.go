package main

import (
	"encoding/json"
	"os"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/internal/cli"
)

// imageInfoPath is the image's description, written by the builder (builder/layers.ImageInfoPath).
const imageInfoPath = "/usr/lib/kiln/image.json"

func newVersionCmd() *cobra.Command {
	c := cli.NewVersionCmd("kiln-firstboot", func() map[string]any {
		b, err := os.ReadFile(imageInfoPath)
		if err != nil {
			return nil // not on a kiln node (a development machine): only the binary's own version
		}
		return map[string]any{"image": json.RawMessage(b)}
	})
	c.Short = "Print the agent's version, commit, commit date and Go version, and the image's " + imageInfoPath
	return c
}
