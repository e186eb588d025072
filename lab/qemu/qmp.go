package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// QMP is a minimal client of qemu's machine protocol: one command at a time, events skipped.
type QMP struct {
	conn net.Conn
	r    *bufio.Reader
}

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
	QMP   any    `json:"QMP"`
}

// DialQMP connects to socket and negotiates capabilities. The whole exchange is bounded by ctx.
func DialQMP(ctx context.Context, socket string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", socket, err)
	}
	q := &QMP{conn: conn, r: bufio.NewReader(conn)}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	var greeting qmpReply
	if err := q.read(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: %s: no greeting: %v", socket, err)
	}
	if _, err := q.Execute("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *QMP) read(v *qmpReply) error {
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

// Execute runs one command and returns its "return" value.
func (q *QMP) Execute(cmd string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp: %s: %w", cmd, err)
	}
	for {
		var rep qmpReply
		if err := q.read(&rep); err != nil {
			return nil, fmt.Errorf("qmp: %s: %w", cmd, err)
		}
		if rep.Event != "" { // asynchronous events interleave with replies
			continue
		}
		if rep.Error != nil {
			return nil, fmt.Errorf("qmp: %s: %s: %s", cmd, rep.Error.Class, rep.Error.Desc)
		}
		return rep.Return, nil
	}
}

// Close ends the session.
func (q *QMP) Close() error { return q.conn.Close() }

// Status is qemu's run state ("running", "paused", "shutdown", …) as reported by query-status.
func Status(ctx context.Context, socket string) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	if err := call(ctx, socket, "query-status", &st); err != nil {
		return "", err
	}
	return st.Status, nil
}

// Powerdown presses the ACPI power button.
func Powerdown(ctx context.Context, socket string) error {
	return call(ctx, socket, "system_powerdown", nil)
}

func call(ctx context.Context, socket, cmd string, out any) error {
	q, err := DialQMP(ctx, socket)
	if err != nil {
		return err
	}
	defer q.Close()
	ret, err := q.Execute(cmd, nil)
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(ret, out); err != nil {
			return fmt.Errorf("qmp: %s: decode %s: %w", cmd, ret, err)
		}
	}
	return nil
}

// ErrNoKVM means the KVM probe did not see a guest run under KVM.
var ErrNoKVM = errors.New("kvm unusable")
