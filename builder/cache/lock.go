package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// lock is one key's flock. flock locks belong to the open file description, so two goroutines of one
// process exclude each other as two processes do, as long as each opens the file itself (openLock).
type lock struct {
	f *os.File
}

func openLock(path string) (*lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cache: lock: %w", err)
	}
	return &lock{f: f}, nil
}

// errNoLongerNeeded is what acquire returns when its stop condition became true while it waited.
var errNoLongerNeeded = errors.New("cache: lock no longer needed")

// acquire takes the lock shared or exclusive (converting a held one), waiting until ctx is done.
// Non-blocking attempts in a loop, because a blocking flock cannot be interrupted by ctx.
func (l *lock) acquire(ctx context.Context, exclusive bool, poll time.Duration) error {
	return l.acquireUnless(ctx, exclusive, poll, nil)
}

// acquireUnless is acquire that gives up with errNoLongerNeeded once stop (checked between attempts)
// reports true. A builder waiting to build a key needs this: the builder that got there first keeps a
// shared lock on its finished entry for as long as it uses it, so the exclusive lock may never come.
func (l *lock) acquireUnless(ctx context.Context, exclusive bool, poll time.Duration, stop func() bool) error {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		err := unix.Flock(int(l.f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("cache: lock %s: %w", l.f.Name(), err)
		}
		if stop != nil && stop() {
			return errNoLongerNeeded
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cache: waiting for %s: %w", l.f.Name(), ctx.Err())
		case <-t.C:
		}
	}
}

// unlock drops the lock, so that a shared holder wanting it exclusively never waits on itself.
func (l *lock) unlock() error {
	if err := unix.Flock(int(l.f.Fd()), unix.LOCK_UN); err != nil {
		return fmt.Errorf("cache: unlock %s: %w", l.f.Name(), err)
	}
	return nil
}

func (l *lock) close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	return err
}
