package firstboot

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/state"
)

func TestNewEpoch(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewEpoch(dir, "aa", "10.0.0.1:2377", time.Now()); err == nil {
		t.Fatal("no record: want an error")
	}
	old := record{Formation: state.Formation{SwarmID: "s", Initialiser: "aa", ManagerToken: "m", WorkerToken: "w",
		ManagerAddrs: []string{"10.0.0.1:2377", "10.0.0.2:2377", "10.0.0.3:2377"}, Managers: 3,
		GlusterPeers: map[string]string{"10.0.0.1": "u1"}}, Updated: time.Unix(1, 0)}
	if err := writeJSON(filepath.Join(dir, formationFile), &old); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	for want := 1; want <= 2; want++ {
		// "bb" recovers: the survivor, not the original initialiser "aa" (lost, or back later).
		e, err := NewEpoch(dir, "bb", "10.0.0.1:2377", now)
		if err != nil || e != want {
			t.Fatalf("NewEpoch = %d, %v; want %d", e, err, want)
		}
	}
	var r record
	var le localEpoch
	readJSON(filepath.Join(dir, formationFile), &r)
	readJSON(filepath.Join(dir, epochFile), &le)
	if r.Epoch != 2 || le.Epoch != 2 || len(r.ManagerAddrs) != 1 || r.Managers != 1 || r.GlusterPeers != nil ||
		!r.Updated.Equal(now) || r.SwarmID != "s" || r.ManagerToken != "m" || r.Initialiser != "bb" {
		t.Fatalf("record %+v, local epoch %d", r, le.Epoch)
	}
}

// A record of an older epoch never overwrites a newer one, whatever its time; a newer epoch always wins.
func TestMergeByEpoch(t *testing.T) {
	a := &agent{opts: Options{StateDir: t.TempDir()}.withDefaults(), log: Options{}.withDefaults().Logger, kick: make(chan struct{}, 1), conflicted: map[string]bool{}}
	a.el = nil
	base := record{Formation: state.Formation{SwarmID: "s", Initialiser: "aa", ManagerToken: "m", WorkerToken: "w", ManagerAddrs: []string{"x:2377"}, Epoch: 1}, Updated: time.Unix(100, 0)}
	a.rec = &base
	older := base
	older.Epoch, older.Updated, older.ManagerAddrs = 0, time.Unix(999, 0), []string{"y:2377"}
	a.merge(older, "test")
	if a.rec.Epoch != 1 || a.rec.ManagerAddrs[0] != "x:2377" {
		t.Fatalf("an older epoch's record overwrote the recovered one: %+v", a.rec)
	}
	newer := base
	newer.Epoch, newer.Updated, newer.ManagerAddrs = 2, time.Unix(1, 0), []string{"z:2377"}
	a.merge(newer, "test")
	if a.rec.Epoch != 2 || a.rec.ManagerAddrs[0] != "z:2377" {
		t.Fatalf("a newer epoch's record was not adopted: %+v", a.rec)
	}
}

// A node whose swarm has held a live quorum since before a newer epoch was made (by a forced recovery on a
// node cut off from it) refuses that epoch and says so in its status. Nodes whose quorum began after it
// (the declared-lost nodes coming back together) or ended adopt it.
func TestLiveQuorumRefusesNewerEpoch(t *testing.T) {
	t0 := time.Now()
	base := record{Formation: state.Formation{SwarmID: "s", Initialiser: "aa", ManagerToken: "m", WorkerToken: "w",
		ManagerAddrs: []string{"10.0.0.1:2377", "10.0.0.2:2377", "10.0.0.3:2377"}}, Updated: t0.Add(-time.Hour)}
	recovered := base
	recovered.Epoch, recovered.Origin, recovered.ManagerAddrs, recovered.Updated = 1, "cc", []string{"10.0.0.3:2377"}, t0.Add(-10*time.Minute)
	newAgent := func() *agent {
		a := &agent{opts: Options{StateDir: t.TempDir()}.withDefaults(), log: Options{}.withDefaults().Logger, kick: make(chan struct{}, 1), conflicted: map[string]bool{}}
		rec := base
		a.rec = &rec
		return a
	}
	for _, c := range []struct {
		name   string
		passes []time.Duration // offsets from t0 of passes that saw a leader and 3 managers
		adopt  bool
	}{
		{"quorum all along", minutely(-20, 0), false},
		{"quorum formed after the recovery", []time.Duration{-time.Minute, 0}, true},
		{"quorum with a gap across the recovery", []time.Duration{-20 * time.Minute, -time.Minute, 0}, true},
		{"quorum lost since", []time.Duration{-20 * time.Minute}, true},
		{"never a quorum", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newAgent()
			for _, d := range c.passes {
				a.sawQuorum(t0.Add(d), 3)
			}
			a.merge(recovered, "cc")
			if adopted := a.rec.Epoch == 1; adopted != c.adopt {
				t.Fatalf("adopted %v, want %v (alert %q)", adopted, c.adopt, a.refused)
			}
			if !c.adopt && !strings.Contains(a.refused, "refused epoch 1") {
				t.Fatalf("refused without an alert: %q", a.refused)
			}
		})
	}
	a := newAgent()
	a.sawQuorum(t0.Add(-20*time.Minute), 1)
	a.sawQuorum(t0, 1)
	if a.liveQuorum(t0, recovered.Updated) {
		t.Fatal("a swarm with a single reachable manager counts as a live quorum")
	}
}

// minutely is one pass a minute, from minute from to minute to (offsets).
func minutely(from, to int) []time.Duration {
	var ds []time.Duration
	for m := from; m <= to; m++ {
		ds = append(ds, time.Duration(m)*time.Minute)
	}
	return ds
}

// The storage CA is the initialiser's for the life of the cluster: a refresh that brings another one or none
// is ignored, whoever signed it, and a recovery keeps it.
func TestStorageCAStays(t *testing.T) {
	ca, _ := glustertls.NewCA("c")
	other, _ := glustertls.NewCA("c")
	a := &agent{opts: Options{StateDir: t.TempDir()}.withDefaults(), log: Options{}.withDefaults().Logger, kick: make(chan struct{}, 1), conflicted: map[string]bool{}}
	base := record{Formation: state.Formation{SwarmID: "s", Initialiser: "aa", ManagerToken: "m", WorkerToken: "w",
		ManagerAddrs: []string{"x:2377"}, StorageCA: ca}, Updated: time.Unix(100, 0)}
	a.rec = &base
	for name, c := range map[string]*glustertls.CA{"another CA": other, "no CA": nil} {
		r := base
		r.StorageCA, r.Updated, r.ManagerAddrs = c, time.Unix(200, 0), []string{"y:2377"}
		a.merge(r, "test")
		if a.rec.ManagerAddrs[0] != "x:2377" || *a.rec.StorageCA != *ca {
			t.Fatalf("%s: refresh adopted: %+v", name, a.rec)
		}
	}
	r := base
	r.Updated, r.ManagerAddrs = time.Unix(200, 0), []string{"y:2377"}
	a.merge(r, "test")
	if a.rec.ManagerAddrs[0] != "y:2377" {
		t.Fatalf("a refresh with the same CA was not adopted: %+v", a.rec)
	}

	dir := t.TempDir()
	// glusterd starts with TLS before there is a record and in a cluster with a CA; a record without one is a
	// cluster formed before storage TLS, which stays plaintext.
	if want, err := StorageTLSWanted(dir); err != nil || !want {
		t.Errorf("no record: StorageTLSWanted = %v, %v; want true", want, err)
	}
	plain := base
	plain.StorageCA = nil
	if err := writeJSON(filepath.Join(dir, formationFile), &plain); err != nil {
		t.Fatal(err)
	}
	if want, err := StorageTLSWanted(dir); err != nil || want {
		t.Errorf("record without a CA: StorageTLSWanted = %v, %v; want false", want, err)
	}
	if err := writeJSON(filepath.Join(dir, formationFile), &base); err != nil {
		t.Fatal(err)
	}
	if want, err := StorageTLSWanted(dir); err != nil || !want {
		t.Errorf("record with a CA: StorageTLSWanted = %v, %v; want true", want, err)
	}
	if _, err := NewEpoch(dir, "bb", "10.0.0.1:2377", time.Now()); err != nil {
		t.Fatal(err)
	}
	var rec record
	if _, err := readJSON(filepath.Join(dir, formationFile), &rec); err != nil || rec.StorageCA == nil || *rec.StorageCA != *ca {
		t.Fatalf("the recovery's record lost the storage CA: %v", err)
	}
}
