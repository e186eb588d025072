package netns

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// Table is the nft table (bridge family) holding a lab's partitions. The lab owns it whole and replaces it in one
// transaction, so the rules always equal the lab's recorded partitions.
const Table = "kiln-lab"

// Cut takes one node's tap off the network.
type Cut struct {
	// Tap is the node's bridge port.
	Tap string
	// PeersOnly cuts the node from the other nodes but not from the lab host (the bridge's own address).
	PeersOnly bool
}

// Render is the nft script that makes the table hold exactly cuts. Pure: golden-tested.
//
// Frames between two taps are bridged and pass the forward hook, so dropping on the tap's name there cuts it from
// every other node, including nodes added later. Frames to and from the bridge itself (the lab host) pass the
// input and output hooks instead: a full cut also drops there.
func Render(cuts []Cut) string {
	cuts = append([]Cut(nil), cuts...)
	sort.Slice(cuts, func(i, j int) bool { return cuts[i].Tap < cuts[j].Tap })
	var b strings.Builder
	// Create-then-delete makes the delete valid whether or not the table exists; all in one transaction.
	fmt.Fprintf(&b, "table bridge %s\ndelete table bridge %s\n", Table, Table)
	if len(cuts) == 0 {
		return b.String()
	}
	var fwd, in, out []string
	for _, c := range cuts {
		fwd = append(fwd, fmt.Sprintf("\t\tiifname %q drop\n\t\toifname %q drop\n", c.Tap, c.Tap))
		if !c.PeersOnly {
			in = append(in, fmt.Sprintf("\t\tiifname %q drop\n", c.Tap))
			out = append(out, fmt.Sprintf("\t\toifname %q drop\n", c.Tap))
		}
	}
	fmt.Fprintf(&b, "table bridge %s {\n", Table)
	chain := func(name string, rules []string) {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook %s priority 0; policy accept;\n%s\t}\n",
			name, name, strings.Join(rules, ""))
	}
	chain("forward", fwd)
	chain("input", in)
	chain("output", out)
	b.WriteString("}\n")
	return b.String()
}

// ApplyCuts replaces the lab's partition table in namespace name with cuts.
func ApplyCuts(ctx context.Context, name string, cuts []Cut) error {
	if _, err := Exec(ctx, name, []byte(Render(cuts)), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("netns: %s: apply partitions: %w", name, err)
	}
	return nil
}
