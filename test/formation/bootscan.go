package formation

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// BootScan scans ports on every node's address from inside namespace ns, a round every every, until ctx
// ends, while the nodes boot and form. It returns, by node name, the ports that answered (Open) in any round,
// each with how long after the start it first did, and how many rounds ran. A node that is not up yet, or
// has no address yet, answers nothing; a round's error (ctx ending mid-round) ends the scan.
func BootScan(ctx context.Context, ns string, addrs map[string]netip.Addr, ports []int, every, timeout time.Duration) (map[string]map[int]time.Duration, int) {
	start := time.Now()
	open := map[string]map[int]time.Duration{}
	rounds := 0
	names := slices.Sorted(maps.Keys(addrs))
	for ctx.Err() == nil {
		for _, name := range names {
			res, err := Scan(ctx, ns, netip.Addr{}, addrs[name], ports, timeout)
			if err != nil {
				return open, rounds
			}
			for p, st := range res {
				if st != Open {
					continue
				}
				if open[name] == nil {
					open[name] = map[int]time.Duration{}
				}
				if _, seen := open[name][p]; !seen {
					open[name][p] = time.Since(start).Round(time.Second)
				}
			}
		}
		rounds++
		select {
		case <-ctx.Done():
		case <-time.After(every):
		}
	}
	return open, rounds
}
