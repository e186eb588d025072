package discovery

import (
	"bytes"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"
)

// Streams from one source beyond maxStreamsPerSource are closed on arrival, a slot comes back when its stream
// closes, and a stream is cut at maxStreamBytes: what memberlist buffers before it can authenticate is bounded.
func TestLimitedTransport(t *testing.T) {
	tr, err := newLimitedTransport("127.0.0.1", 0, log.New(io.Discard, "", 0), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.GetAutoBindPort()))

	var server []net.Conn
	for i := range maxStreamsPerSource {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		select {
		case sc := <-tr.StreamCh():
			server = append(server, sc)
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d not admitted", i+1)
		}
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("stream %d from the same source: read %v, want it closed by the server", maxStreamsPerSource+1, err)
	}
	select {
	case <-tr.StreamCh():
		t.Fatal("a stream over the per-source bound reached memberlist")
	default:
	}

	// One stream closes: a new one from the same source is admitted, and it cannot send more than the bound.
	server[0].Close()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sc net.Conn
	select {
	case sc = <-tr.StreamCh():
	case <-time.After(5 * time.Second):
		t.Fatal("a stream after a slot was freed was not admitted")
	}
	go func() { c.Write(bytes.Repeat([]byte{1}, maxStreamBytes+4096)) }()
	sc.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, sc)
	if !errors.Is(err, errStreamTooLarge) || n != maxStreamBytes {
		t.Fatalf("read %d bytes, err %v; want %d and errStreamTooLarge", n, err, maxStreamBytes)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}
