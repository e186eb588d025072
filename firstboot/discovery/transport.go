package discovery

import (
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Bounds on memberlist's TCP streams, which anyone on the LAN can open before anything is authenticated.
// memberlist reads an encrypted stream's whole body into memory before it decrypts it, with the size taken from
// the sender's header (up to 4 GiB), and it serves every accepted connection in a goroutine of its own.
const (
	// maxStreamBytes caps what one stream may send. A push/pull of the full state is about 0.7 KB per member
	// (name, address, metadata of at most 512 bytes), so 4 MiB covers thousands of members.
	maxStreamBytes = 4 << 20
	// maxStreamsPerSource is how many streams one source address may have open at once: members open one
	// or two (push/pull, a probe's fallback), a rejoining node a few more.
	maxStreamsPerSource = 8
	// maxStreams is how many streams may be open at once from everyone.
	maxStreams = 128
)

// errStreamTooLarge ends a stream that sent more than maxStreamBytes.
var errStreamTooLarge = errors.New("discovery: stream exceeds the size bound")

// limitedTransport is memberlist's own TCP/UDP transport with its incoming streams bounded: per source
// address and in all (excess connections are closed at once), and in bytes per stream.
type limitedTransport struct {
	*memberlist.NetTransport
	streams chan net.Conn
	stop    chan struct{}
	done    chan struct{}
	closed  sync.Once
	log     *slog.Logger
	refused *throttle // log throttle per source

	mu     sync.Mutex
	open   map[string]int
	opened int
}

// newLimitedTransport binds memberlist's transport to addr:port (port 0: any free port, as memberlist.Create
// would pick) and starts forwarding its streams within the bounds.
func newLimitedTransport(addr string, port int, logger *log.Logger, slogger *slog.Logger) (*limitedTransport, error) {
	attempts := 1
	if port == 0 {
		attempts = 10 // binding TCP and UDP to one free port races with other binds
	}
	var nt *memberlist.NetTransport
	var err error
	for range attempts {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{addr}, BindPort: port, Logger: logger})
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("discovery: transport on %s:%d: %w", addr, port, err)
	}
	t := &limitedTransport{NetTransport: nt, streams: make(chan net.Conn), stop: make(chan struct{}), done: make(chan struct{}),
		log: slogger, refused: newThrottle(time.Minute), open: map[string]int{}}
	go t.forward()
	return t, nil
}

// StreamCh implements memberlist.Transport: the streams that passed the bounds.
func (t *limitedTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport; calls after the first do nothing.
func (t *limitedTransport) Shutdown() error {
	var err error
	t.closed.Do(func() {
		err = t.NetTransport.Shutdown()
		close(t.stop)
		<-t.done
	})
	return err
}

func (t *limitedTransport) forward() {
	defer close(t.done)
	for {
		select {
		case <-t.stop:
			return
		case c := <-t.NetTransport.StreamCh():
			lc, ok := t.admit(c)
			if !ok {
				c.Close()
				continue
			}
			select {
			case t.streams <- lc:
			case <-t.stop:
				lc.Close()
				return
			}
		}
	}
}

// admit counts c against its source's and the global bound, and wraps it to give its slot back on Close.
func (t *limitedTransport) admit(c net.Conn) (net.Conn, bool) {
	src := c.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(src); err == nil {
		src = h
	}
	t.mu.Lock()
	if t.open[src] >= maxStreamsPerSource || t.opened >= maxStreams {
		perSource, all := t.open[src], t.opened
		t.mu.Unlock()
		if t.refused.allow(src, time.Now()) {
			t.log.Warn("gossip stream refused: too many open", "from", src, "open_from_source", perSource, "open", all)
		}
		return nil, false
	}
	t.open[src]++
	t.opened++
	t.mu.Unlock()
	return &boundedConn{Conn: c, left: maxStreamBytes, release: func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.opened--
		if t.open[src]--; t.open[src] <= 0 {
			delete(t.open, src)
		}
	}}, true
}

// boundedConn reads at most left bytes and gives its slot back once, on the first Close.
type boundedConn struct {
	net.Conn
	left    int64
	release func()
	once    sync.Once
}

func (c *boundedConn) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errStreamTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *boundedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
