package discovery

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// BeaconPort is the UDP port of LAN beacons (kiln's memberlist uses 7948; adjacent ports keep the pair together in
// firewall rules).
const BeaconPort = 7947

// BeaconConfig configures the LAN beacon.
type BeaconConfig struct {
	// Listen is the UDP address to receive beacons on. Production: ":7947" (a socket bound to one unicast
	// address does not receive broadcasts). Tests: a loopback address. Empty disables beacons.
	Listen string
	// Targets are where to send beacons. Production: the cluster subnet's broadcast address. Tests: the
	// other nodes' loopback addresses, since broadcast does not work on lo.
	Targets []netip.AddrPort
	// Interval is the pause between beacons while the membership is incomplete (default 2 s), and
	// QuietInterval once every expected member is alive (default 15 s): beacons then only heal partitions.
	Interval, QuietInterval time.Duration
	// Window is the freshness window (default 5 min, see Replay).
	Window time.Duration
}

// beaconer sends and receives beacons. join is called (from its own goroutine) for every fresh, authentic
// beacon of a node that is not a live member.
type beaconer struct {
	cfg  BeaconConfig
	keys Keys
	// acceptBeacon are further beacon MAC keys accepted (a key rotation under way); beacons are sent with
	// keys.Beacon only.
	acceptBeacon [][]byte
	self         func() Beacon
	quiet        func() bool
	join         func(b Beacon)
	log          *slog.Logger
	conn         net.PacketConn
	replay       Replay

	// warned throttles the rejection warnings per source address.
	warned *throttle
}

func listenBeacon(ctx context.Context, addr string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// SO_BROADCAST: sending to the subnet broadcast address needs it. SO_REUSEADDR: a restarted
			// agent can rebind while the old socket lingers.
			if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1); serr != nil {
				return
			}
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		})
		return errors.Join(err, serr)
	}}
	return lc.ListenPacket(ctx, "udp4", addr)
}

func (b *beaconer) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.receive(ctx)
	}()
	b.send(ctx)
	b.conn.Close()
	wg.Wait()
}

func (b *beaconer) send(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, err := EncodeBeacon(b.self(), b.keys.Beacon)
		if err != nil {
			b.log.Error("beacon: encode", "err", err)
			return
		}
		for _, to := range b.cfg.Targets {
			if _, err := b.conn.WriteTo(p, net.UDPAddrFromAddrPort(to)); err != nil {
				b.logOnce("send:"+to.String(), "beacon: send failed", "to", to, "err", err)
			}
		}
		next := b.cfg.Interval
		if b.quiet() {
			next = b.cfg.QuietInterval
		}
		t.Reset(next)
	}
}

func (b *beaconer) receive(ctx context.Context) {
	buf := make([]byte, 2048)
	for {
		n, from, err := b.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			b.log.Warn("beacon: receive", "err", err)
			continue
		}
		bc, err := DecodeBeacon(buf[:n], b.keys.NameHash, append([][]byte{b.keys.Beacon}, b.acceptBeacon...)...)
		switch {
		case errors.Is(err, ErrOtherCluster):
			continue // another kiln cluster on the same LAN: routine, not worth a log line
		case err != nil:
			b.logOnce(from.String(), "beacon ignored", "from", from.String(), "err", err)
			continue
		}
		self := b.self()
		if bc.NodeID == self.NodeID {
			continue
		}
		if err := b.replay.Check(bc, time.Now()); err != nil {
			b.logOnce(from.String(), "beacon ignored", "from", from.String(), "err", err)
			continue
		}
		b.join(bc)
	}
}

// logOnce logs at most once a minute per key: a misconfigured neighbour beacons every 2 s.
func (b *beaconer) logOnce(key, msg string, args ...any) {
	if b.warned.allow(key, time.Now()) {
		b.log.Warn(msg, args...)
	}
}
