package formation

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-project/kiln/lab"
)

// UnitActiveAt returns when unit on n last entered the active state, on the host's clock, or the zero time if it
// never did. The guest's monotonic clock is mapped onto the host's through one exec: the guest reads its uptime
// and the unit's ActiveEnterTimestampMonotonic in one go, and the host takes the midpoint of the round trip as
// the instant of that uptime reading (error ≤ half the round trip). Guest wall clocks are never trusted.
func UnitActiveAt(ctx context.Context, n *lab.Node, unit string) (time.Time, error) {
	before := time.Now()
	out, err := Exec(ctx, n, "sh", "-c", `read up idle < /proc/uptime; echo "$up"; systemctl show -p ActiveEnterTimestampMonotonic --value "$1"`, "sh", unit)
	after := time.Now()
	if err != nil {
		return time.Time{}, err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return time.Time{}, fmt.Errorf("%s: uptime and %s timestamp: unexpected %q", n.Name(), unit, out)
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: uptime %q: %w", n.Name(), f[0], err)
	}
	mono, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %s ActiveEnterTimestampMonotonic %q: %w", n.Name(), unit, f[1], err)
	}
	if mono == 0 {
		return time.Time{}, nil
	}
	return GuestToHost(before, after, up, mono), nil
}

// GuestToHost maps a guest monotonic instant (µs since guest boot) to host time, given the host instants
// around an exec that read the guest's uptime (seconds).
func GuestToHost(before, after time.Time, uptimeSec float64, monoUsec int64) time.Time {
	mid := before.Add(after.Sub(before) / 2)
	ago := time.Duration(uptimeSec*float64(time.Second)) - time.Duration(monoUsec)*time.Microsecond
	return mid.Add(-ago)
}
