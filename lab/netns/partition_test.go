package netns

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestRenderGolden(t *testing.T) {
	for name, cuts := range map[string][]Cut{
		"none":  nil,
		"mixed": {{Tap: "tap3", PeersOnly: true}, {Tap: "tap1"}},
	} {
		t.Run(name, func(t *testing.T) {
			got := Render(cuts)
			golden := filepath.Join("testdata", name+".nft")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("render differs from %s:\n%s", golden, got)
			}
		})
	}
}
