// Package sdunit is the agent's small door to systemd over D-Bus: reload unit files, start or reload a unit
// and wait for the job's result, and read a unit's ActiveState.
package sdunit

import (
	"context"
	"fmt"

	"github.com/coreos/go-systemd/v22/dbus"
)

// Manager is what reconcilers need from systemd; *Conn implements it, tests use fakes.
type Manager interface {
	DaemonReload(ctx context.Context) error
	// Start starts unit (a no-op job if it is already active) and waits for the job to finish.
	Start(ctx context.Context, unit string) error
	// ReloadOrRestart reloads unit if it supports reloading, else restarts it; it starts it if inactive.
	ReloadOrRestart(ctx context.Context, unit string) error
	// ActiveState returns the unit's ActiveState (active, inactive, failed, activating, …).
	ActiveState(ctx context.Context, unit string) (string, error)
}

// Conn is a system-bus connection to systemd.
type Conn struct{ c *dbus.Conn }

// Connect opens the connection; Close it when done.
func Connect(ctx context.Context) (*Conn, error) {
	c, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("systemd: connect: %w", err)
	}
	return &Conn{c: c}, nil
}

// Close closes the bus connection.
func (c *Conn) Close() { c.c.Close() }

// DaemonReload makes systemd re-read unit files (after writing one under /run/systemd/system).
func (c *Conn) DaemonReload(ctx context.Context) error {
	if err := c.c.ReloadContext(ctx); err != nil {
		return fmt.Errorf("systemd: daemon-reload: %w", err)
	}
	return nil
}

// Start implements Manager.
func (c *Conn) Start(ctx context.Context, unit string) error {
	return c.job(ctx, "start", unit, c.c.StartUnitContext)
}

// Stop stops unit and waits for the job (not in Manager: only the gluster reconciler needs it, to change
// glusterd's identity file while glusterd is down).
func (c *Conn) Stop(ctx context.Context, unit string) error {
	return c.job(ctx, "stop", unit, c.c.StopUnitContext)
}

// ReloadOrRestart implements Manager.
func (c *Conn) ReloadOrRestart(ctx context.Context, unit string) error {
	return c.job(ctx, "reload-or-restart", unit, c.c.ReloadOrRestartUnitContext)
}

// job runs one systemd job and waits for its result. The channel is buffered: go-systemd blocks the whole
// connection until the result is received.
func (c *Conn) job(ctx context.Context, verb, unit string, f func(context.Context, string, string, chan<- string) (int, error)) error {
	ch := make(chan string, 1)
	if _, err := f(ctx, unit, "replace", ch); err != nil {
		return fmt.Errorf("systemd: %s %s: %w", verb, unit, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("systemd: %s %s: job %s", verb, unit, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("systemd: %s %s: %w", verb, unit, ctx.Err())
	}
}

// ActiveState implements Manager.
func (c *Conn) ActiveState(ctx context.Context, unit string) (string, error) {
	p, err := c.c.GetUnitPropertyContext(ctx, unit, "ActiveState")
	if err != nil {
		return "", fmt.Errorf("systemd: %s ActiveState: %w", unit, err)
	}
	s, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("systemd: %s ActiveState: unexpected value %v", unit, p.Value)
	}
	return s, nil
}
