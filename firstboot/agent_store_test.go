package firstboot

import (
	"slices"
	"testing"

	"github.com/kiln-project/kiln/firstboot/state"
)

// TestWorthRefreshing: a manager list that only lacks addresses is no news (records ping-ponged between
// nodes whose views lagged each other); new addresses, new tokens or another manager count are.
func TestWorthRefreshing(t *testing.T) {
	cur := &record{Formation: state.Formation{SwarmID: "s", Initialiser: "a", ManagerToken: "m", WorkerToken: "w",
		ManagerAddrs: []string{"10.0.0.1:2377", "10.0.0.2:2377", "10.0.0.3:2377"}, Managers: 3}}
	with := func(f func(*record)) *record {
		r := *cur
		r.ManagerAddrs = slices.Clone(cur.ManagerAddrs)
		f(&r)
		return &r
	}
	for name, tc := range map[string]struct {
		next *record
		want bool
	}{
		"same":                              {with(func(*record) {}), false},
		"fewer addresses":                   {with(func(r *record) { r.ManagerAddrs = r.ManagerAddrs[1:] }), false},
		"new address":                       {with(func(r *record) { r.ManagerAddrs = []string{"10.0.0.2:2377", "10.0.0.3:2377", "10.0.0.4:2377"} }), true},
		"fewer addresses and another count": {with(func(r *record) { r.ManagerAddrs, r.Managers = r.ManagerAddrs[1:], 2 }), true},
		"rotated token":                     {with(func(r *record) { r.ManagerToken = "m2" }), true},
	} {
		if got := worthRefreshing(cur, tc.next); got != tc.want {
			t.Errorf("%s: worthRefreshing = %v, want %v", name, got, tc.want)
		}
	}
}
