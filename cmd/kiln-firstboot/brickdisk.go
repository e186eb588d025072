package main

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-project/kiln/firstboot/brickdisk"
)

// brickDiskTimeout bounds the boot step: probing a few disks and, once per disk's life, a lazy-init mkfs.
const brickDiskTimeout = 3 * time.Minute

func newBrickDiskCmd() *cobra.Command {
	var apply bool
	cmd := &cobra.Command{
		Use:   "brick-disk",
		Short: "Show which disk holds the gluster brick; --apply formats an empty second disk and mounts it (kiln-brick-disk.service)",
		Long: `Decides where this node's gluster brick lives: a disk labelled ` + brickdisk.Label + `, else the first entirely empty
disk (no partition table, no filesystem, first MiB zero), else the state partition. A disk that holds anything
is never written to, and a node with /var in RAM takes no disk (it holds no brick). With --apply the chosen disk
is formatted (only when empty) and mounted at ` + brickdisk.MountPoint + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), brickDiskTimeout)
			defer cancel()
			h := brickdisk.Real(newLogger(slog.LevelInfo))
			if apply {
				_, err := h.Reconcile(ctx)
				return err
			}
			return showBrickDisk(ctx, h)
		},
	}
	cmd.Flags().BoolVar(&apply, "apply", false, "format (if empty) and mount the chosen disk")
	return cmd
}

func showBrickDisk(ctx context.Context, h *brickdisk.Host) error {
	d, err := h.Decide(ctx)
	if err != nil {
		return err
	}
	if d.Disk != nil {
		fmt.Printf("chosen: %s (%s)\n", d.Disk.Name, d.Reason)
	} else {
		fmt.Printf("none: %s\n", d.Reason)
	}
	names := make([]string, 0, len(d.Skipped))
	for n := range d.Skipped {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("  %s: %s\n", n, d.Skipped[n])
	}
	return nil
}
