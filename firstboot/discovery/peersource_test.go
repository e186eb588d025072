package discovery

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
)

type listSource struct {
	addrs []netip.Addr
	err   error
}

func (l listSource) Peers(context.Context) ([]netip.Addr, error) { return l.addrs, l.err }

// TestSeedsFromPeerSource: a seed round joins the static peers and what the source lists now, never this node
// itself; a failing source keeps the seeds it still returns.
func TestSeedsFromPeerSource(t *testing.T) {
	self := netip.MustParseAddrPort("10.0.1.11:7948")
	for _, tc := range []struct {
		src  listSource
		want []string
	}{
		{listSource{addrs: []netip.Addr{netip.MustParseAddr("10.0.1.11"), netip.MustParseAddr("10.0.1.12"), netip.MustParseAddr("10.0.2.13")}},
			[]string{"10.0.9.9", "10.0.1.12", "10.0.2.13"}},
		{listSource{addrs: []netip.Addr{netip.MustParseAddr("10.0.1.12")}, err: errors.New("throttled")}, []string{"10.0.9.9", "10.0.1.12"}},
		{listSource{err: errors.New("no role")}, []string{"10.0.9.9"}},
	} {
		d := &Discovery{cfg: Config{Peers: []string{"10.0.9.9"}, PeerSource: tc.src}, addr: self, log: slog.New(slog.DiscardHandler)}
		if got := d.seeds(context.Background()); !slices.Equal(got, tc.want) {
			t.Errorf("source %v: seeds %v, want %v", tc.src, got, tc.want)
		}
		if len(d.cfg.Peers) != 1 {
			t.Fatalf("seeds changed the static peers: %v", d.cfg.Peers)
		}
	}
}
