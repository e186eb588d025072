// Package awsvip is the reconciler that makes the VIP work inside an AWS VPC. keepalived moves the VIP
// between members (VRRP, unicast), but a VPC only delivers packets for an address to the network interface
// EC2 has it assigned to, whatever the instance's own interface says. So whenever this node carries the VIP,
// the reconciler checks that EC2 has it as a secondary private address of this node's interface, and
// assigns it there (AssignPrivateIpAddresses with reassignment allowed: EC2 takes it from the old holder)
// when it does not. A node that does not carry the VIP does nothing: the new holder's assignment moves it.
package awsvip

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/kiln-project/kiln/cloud/aws/awserr"
	"github.com/kiln-project/kiln/firstboot/state"
)

// EC2 is what the reconciler asks EC2 (cloud/aws/ec2node.Node).
type EC2 interface {
	// ENI is this instance's network interface id.
	ENI(ctx context.Context) (string, error)
	HasPrivateIP(ctx context.Context, eni string, ip netip.Addr) (bool, error)
	AssignPrivateIP(ctx context.Context, eni string, ip netip.Addr) error
}

// Name is the reconciler's name in status.
const Name = "aws-vip"

// Attempts and Backoff bound the assignment within one pass: a holder whose assignment keeps failing reports
// the error and tries again next pass rather than holding the pass up. A refused permission is not retried.
const (
	Attempts = 3
	Backoff  = time.Second
)

// Reconciler keeps the VIP assigned to this node's interface in EC2 while this node carries it.
type Reconciler struct {
	ec2 EC2
	// holds reports whether interface dev carries vip now (netif.Carries over netlink).
	holds func(dev string, vip netip.Addr) (bool, error)
	log   *slog.Logger
	// backoff is Backoff unless a test shortens it.
	backoff time.Duration
	// last is the last assignment that succeeded, for the status line; lost with the process, which only
	// costs the line its history (EC2 is asked again every pass).
	last assignment
}

type assignment struct {
	eni string
	at  time.Time
}

func (a assignment) String() string {
	if a.eni == "" {
		return "none by this agent"
	}
	return fmt.Sprintf("to %s at %s", a.eni, a.at.UTC().Format(time.RFC3339))
}

// New returns the reconciler.
func New(ec2 EC2, holds func(dev string, vip netip.Addr) (bool, error), log *slog.Logger) *Reconciler {
	return &Reconciler{ec2: ec2, holds: holds, log: log, backoff: Backoff}
}

// Name implements state.Reconciler.
func (r *Reconciler) Name() string { return Name }

// Reconcile observes whether this node carries the VIP and whether EC2 has it on this node's interface, and
// assigns it when the first holds and the second does not.
func (r *Reconciler) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	if !s.VIP.IsValid() {
		s.Set(Name, "no VIP configured")
		return false, nil
	}
	vip := s.VIP.Addr()
	holds, err := r.holds(s.Interface, vip)
	if err != nil {
		return false, fmt.Errorf("aws-vip: %w", err)
	}
	if !holds {
		s.Set(Name, fmt.Sprintf("not the VIP holder; last assignment %s", r.last))
		return false, nil
	}
	eni, err := r.ec2.ENI(ctx)
	if err != nil {
		return false, fmt.Errorf("aws-vip: %w", err)
	}
	has, err := r.ec2.HasPrivateIP(ctx, eni, vip)
	if err != nil {
		// Describing is only the check: a role allowed to assign but not to describe still gets the VIP.
		r.log.Warn("aws-vip: cannot see the interface's addresses; assigning anyway", "eni", eni, "err", err)
	}
	if has {
		s.Set(Name, fmt.Sprintf("VIP %s on %s; last assignment %s", vip, eni, r.last))
		return false, nil
	}
	for attempt := 1; ; attempt++ {
		err = r.ec2.AssignPrivateIP(ctx, eni, vip)
		if err == nil {
			break
		}
		if attempt == Attempts || ctx.Err() != nil || awserr.Permanent(err) {
			return false, fmt.Errorf("aws-vip: assign %s to %s (%d attempts; last assignment %s): %w", vip, eni, attempt, r.last, err)
		}
		r.log.Warn("aws-vip: assign failed, retrying", "vip", vip, "eni", eni, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * r.backoff):
		}
	}
	r.last = assignment{eni: eni, at: time.Now()}
	r.log.Info("aws-vip: assigned the VIP to this node's interface", "vip", vip, "eni", eni)
	s.Set(Name, fmt.Sprintf("VIP %s on %s; last assignment %s", vip, eni, r.last))
	return true, nil
}
