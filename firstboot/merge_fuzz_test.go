package firstboot

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/discovery"
	"github.com/kiln-project/kiln/firstboot/election"
	"github.com/kiln-project/kiln/firstboot/state"
)

// FuzzFormationRecord delivers a fuzzed formation record, as any key holder could send it, to an agent
// with no record and to one holding swarm "s" at epoch 1. Whatever it says: no panic; an adopted record is
// valid; the agent never moves to another swarm, never to an older epoch, and its decision matches the
// record it adopted first.
func FuzzFormationRecord(f *testing.F) {
	good, _ := json.Marshal(record{Formation: state.Formation{SwarmID: "s", Initialiser: "aa", ManagerToken: "m",
		WorkerToken: "w", ManagerAddrs: []string{"10.0.0.1:2377"}, Epoch: 1}, Updated: time.Unix(200, 0)})
	f.Add(good)
	f.Add([]byte(`{"swarm_id":"t","initialiser":"bb","manager_token":"m","worker_token":"w","manager_addrs":["x"],"epoch":5}`))
	f.Add([]byte(`{"epoch":-1}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, held := range []bool{false, true} {
			a := &agent{id: "aa", opts: Options{StateDir: t.TempDir()}.withDefaults(), log: Options{}.withDefaults().Logger,
				kick: make(chan struct{}, 1), conflicted: map[string]bool{}, el: election.New("aa", 3, election.Persistent{}, election.Config{})}
			base := record{Formation: state.Formation{SwarmID: "s", Initialiser: "aa", ManagerToken: "m", WorkerToken: "w",
				ManagerAddrs: []string{"10.0.0.1:2377"}, Epoch: 1}, Updated: time.Unix(100, 0)}
			if held {
				a.rec = &base
			}
			a.onMessage(discovery.Message{From: "bb", Body: append([]byte{msgFormation}, body...)})
			if a.rec == nil {
				continue
			}
			if err := a.rec.valid(); err != nil {
				t.Fatalf("adopted an invalid record %+v: %v", a.rec, err)
			}
			if held && (a.rec.SwarmID != "s" || a.rec.Epoch < 1) {
				t.Fatalf("moved from swarm s epoch 1 to %q epoch %d", a.rec.SwarmID, a.rec.Epoch)
			}
			if !held && a.el.Decided() != a.rec.Initialiser {
				t.Fatalf("decided %q, adopted a record of initialiser %q", a.el.Decided(), a.rec.Initialiser)
			}
		}
	})
}
