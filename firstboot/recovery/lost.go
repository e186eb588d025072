package recovery

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/status"
)

// StatusFresh is how old the agent's status may be: recover decides from the membership it reports.
const StatusFresh = 2 * time.Minute

// ErrNotLost is returned when the nodes named as lost do not match what this node's agent sees.
var ErrNotLost = errors.New("the named nodes are not lost for good")

// CheckLost verifies that lost (node ids or hostnames) names every member but this node, and that each of
// them has been gone for member.LostFor at least: recover removes every other member from the swarm and the volume,
// so it must only remove what the operator named and this node has not seen lately. st is the agent's status,
// now the time of the check.
func CheckLost(st *status.Status, lost []string, now time.Time) error {
	if st == nil {
		return errors.New("no agent status: start kiln-firstboot.service so recover can see the membership")
	}
	if age := now.Sub(st.UpdatedAt); age > StatusFresh {
		return fmt.Errorf("the agent's status is %s old: it is not running or stuck; start it so recover sees the membership", age.Round(time.Second))
	}
	if len(lost) == 0 {
		return errors.New("name the lost nodes with --lost (node id or hostname): recover removes them for good")
	}
	named := map[string]bool{}
	var problems []string
	for _, l := range lost {
		i := slices.IndexFunc(st.Members, func(m member.Member) bool { return m.ID == l || m.Hostname == l })
		if i < 0 {
			problems = append(problems, fmt.Sprintf("%s is not a member this node knows", l))
			continue
		}
		m := st.Members[i]
		if m.ID == st.NodeID {
			problems = append(problems, fmt.Sprintf("%s is this node", l))
			continue
		}
		named[m.ID] = true
		switch {
		case m.Alive:
			problems = append(problems, fmt.Sprintf("%s (%s) is alive", m.Hostname, m.ID))
		case !m.DownSince.IsZero() && now.Sub(m.DownSince) < member.LostFor:
			problems = append(problems, fmt.Sprintf("%s (%s) was seen %s ago (at least %s gone is required)",
				m.Hostname, m.ID, now.Sub(m.DownSince).Round(time.Second), member.LostFor))
		}
	}
	for _, m := range st.Members {
		if m.ID != st.NodeID && !named[m.ID] && !slices.ContainsFunc(lost, func(l string) bool { return l == m.ID || l == m.Hostname }) {
			state := "down"
			if m.Alive {
				state = "alive"
			}
			problems = append(problems, fmt.Sprintf("%s (%s, %s) is not named: recover would remove it too", m.Hostname, m.ID, state))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrNotLost, strings.Join(problems, "; "))
	}
	return nil
}
