package builder

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/builder/cache"
)

// EpochInput is the input the pipeline adds to every stage: the recorded timestamp changes every output.
const EpochInput = "SOURCE_DATE_EPOCH"

// Pipeline runs stages in order, each from the cache when its key is already there.
type Pipeline struct {
	// Stages in order: each one's key includes the keys of the stages it needs (Needer; by default the
	// previous one), and it runs once they are there.
	Stages []Stage
	Cache  *cache.Cache
	// Log is the build's logger; nil discards.
	Log *slog.Logger
	// Observer is told about each stage (progress bars, plain lines); nil for none.
	Observer Observer
	// SourceDateEpoch is passed to every stage (Env) and added to every stage's inputs.
	SourceDateEpoch int64
	// Rebuild names a stage that runs even if cached, and so do the stages that need it, directly or through
	// others; "" for none.
	Rebuild string
}

// Observer follows a pipeline run. Calls come one at a time, from the goroutines of stages that may run
// side by side (Needer).
type Observer interface {
	// StageStart is called before a stage's cache lookup (which may wait for another build of the same key).
	StageStart(name, key string)
	// StageMiss is called when a stage is not cached and is about to run, with the reason.
	StageMiss(name, why string)
	// StageProgress relays a running stage's Env.Progress.
	StageProgress(name string, fraction float64, note string)
	// StageDone is called when a stage's output is ready (hit or built) or failed (err non-nil).
	StageDone(r StageResult, err error)
}

// StageResult is what happened to one stage in one build.
type StageResult struct {
	Name string
	// Key is the cache key: sha256 of (stage, Inputs, parent key).
	Key    string
	Inputs map[string]string
	// Hit reports whether the output came from the cache.
	Hit bool
	// Why says why the stage ran (the changed input, --rebuild, first build); empty on a hit.
	Why string
	// Duration is the wall time this build spent on the stage (lookup, waiting and running).
	Duration time.Duration
	// BuildDuration is how long the stage took when its cache entry was built.
	BuildDuration time.Duration
	// Dir is the stage's output directory in the cache.
	Dir string
}

// Result holds a run's stage results and the cache entries they read, locked until Close.
type Result struct {
	Stages  []StageResult
	entries []*cache.Entry
}

// Close releases the cache entries; until then no concurrent --rebuild can replace them.
func (r *Result) Close() {
	for _, e := range r.entries {
		e.Close()
	}
}

// Last is the final stage's result.
func (r *Result) Last() StageResult { return r.Stages[len(r.Stages)-1] }

// Output returns the output directory of the named stage, "" if there is none.
func (r *Result) Output(stage string) string {
	for _, s := range r.Stages {
		if s.Name == stage {
			return s.Dir
		}
	}
	return ""
}

// Run computes every stage's key first (so a bad input fails before any work), then gets each stage's
// output from the cache or runs it, each as soon as the stages it needs are there: stages that need nothing in
// common run side by side. On error the returned Result is nil, the other running stages are cancelled and
// every lock is released.
func (p *Pipeline) Run(ctx context.Context) (res *Result, err error) {
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var obs Observer = nopObserver{}
	if p.Observer != nil {
		obs = &lockedObserver{o: p.Observer}
	}
	if len(p.Stages) == 0 {
		return nil, fmt.Errorf("builder: no stages")
	}
	index := map[string]int{}
	for i, s := range p.Stages {
		if _, ok := index[s.Name()]; ok {
			return nil, fmt.Errorf("builder: stage %q listed twice", s.Name())
		}
		index[s.Name()] = i
	}
	rebuildAt, ok := index[p.Rebuild]
	if p.Rebuild != "" && !ok {
		return nil, fmt.Errorf("builder: --rebuild %q: no such stage (stages: %s)", p.Rebuild, stageNames(p.Stages))
	}
	needs, err := needsOf(p.Stages, index)
	if err != nil {
		return nil, err
	}
	// closure[i]: every stage i needs, directly or through others (its Env.Outputs); forced[i]: --rebuild
	// names i or a stage in its closure.
	closure := make([]map[int]bool, len(p.Stages))
	forced := make([]bool, len(p.Stages))
	for i := range p.Stages {
		closure[i] = map[int]bool{}
		for _, n := range needs[i] {
			closure[i][n] = true
			maps.Copy(closure[i], closure[n])
		}
		forced[i] = p.Rebuild != "" && (i == rebuildAt || closure[i][rebuildAt])
	}

	inputs := make([]map[string]string, len(p.Stages))
	keys := make([]string, len(p.Stages))
	parents := make([]string, len(p.Stages))
	for i, s := range p.Stages {
		in, err := s.Inputs(ctx)
		if err != nil {
			return nil, fmt.Errorf("builder: %s: inputs: %w", s.Name(), err)
		}
		in = maps.Clone(in)
		if in == nil {
			in = map[string]string{}
		}
		in[EpochInput] = strconv.FormatInt(p.SourceDateEpoch, 10)
		inputs[i] = in
		var pk []string
		for _, n := range needs[i] {
			pk = append(pk, keys[n])
		}
		// One need (the chain) keeps the key a plain chain of parents.
		parents[i] = strings.Join(pk, "+")
		keys[i] = cache.Key(s.Name(), in, parents[i])
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]StageResult, len(p.Stages))
	entries := make([]*cache.Entry, len(p.Stages))
	errs := make([]error, len(p.Stages))
	done := make([]chan struct{}, len(p.Stages))
	for i := range done {
		done[i] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for i, s := range p.Stages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[i])
			for _, n := range needs[i] {
				<-done[n]
				if errs[n] != nil || entries[n] == nil {
					return // the failed stage reports itself
				}
			}
			if ctx.Err() != nil {
				return
			}
			outputs, doneKeys := map[string]string{}, map[string]string{}
			for n := range closure[i] {
				outputs[p.Stages[n].Name()] = entries[n].Out()
				doneKeys[p.Stages[n].Name()] = keys[n]
			}
			entries[i], results[i], errs[i] = p.runStage(ctx, log, obs, s, keys[i], cache.Request{Stage: s.Name(),
				Inputs: inputs[i], Parent: parents[i], Force: forced[i]}, outputs, doneKeys)
			if errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()

	held := &Result{}
	for i := range p.Stages {
		if entries[i] != nil {
			held.entries = append(held.entries, entries[i])
		}
	}
	for i, s := range p.Stages {
		if errs[i] != nil {
			held.Close()
			return nil, fmt.Errorf("builder: stage %s: %w", s.Name(), errs[i])
		}
	}
	if len(held.entries) != len(p.Stages) { // cancelled before every stage ran
		held.Close()
		return nil, fmt.Errorf("builder: %w", context.Cause(ctx))
	}
	held.Stages = results
	return held, nil
}

// runStage gets one stage's output from the cache or runs it.
func (p *Pipeline) runStage(ctx context.Context, log *slog.Logger, obs Observer, s Stage, key string, req cache.Request,
	outputs, doneKeys map[string]string) (*cache.Entry, StageResult, error) {
	name := s.Name()
	slog := log.With("stage", name)
	obs.StageStart(name, key)
	start := time.Now()
	env := &Env{
		Outputs:         outputs,
		Keys:            doneKeys,
		Log:             slog,
		Progress:        func(f float64, note string) { obs.StageProgress(name, f, note) },
		SourceDateEpoch: p.SourceDateEpoch,
	}
	req.OnMiss = func(why string) {
		slog.Info("cache miss: running", "key", short(key), "why", why)
		obs.StageMiss(name, why)
	}
	e, err := p.Cache.Get(ctx, req, func(ctx context.Context, dir string) error {
		return s.Run(ctx, env, dir)
	})
	r := StageResult{Name: name, Key: key, Inputs: req.Inputs, Duration: time.Since(start)}
	if err != nil {
		obs.StageDone(r, err)
		return nil, r, err
	}
	r.Hit, r.Why, r.BuildDuration, r.Dir = e.Hit, e.Why, time.Duration(e.Meta.Duration), e.Out()
	if e.Hit {
		slog.Info("cache hit", "key", short(key))
	} else {
		slog.Info("built", "key", short(key), "duration", r.Duration.Round(time.Millisecond))
	}
	obs.StageDone(r, nil)
	return e, r, nil
}

// needsOf resolves each stage's needs to indexes of earlier stages: Needer's names, else the stage before.
func needsOf(stages []Stage, index map[string]int) ([][]int, error) {
	out := make([][]int, len(stages))
	for i, s := range stages {
		nd, ok := s.(Needer)
		if !ok {
			if i > 0 {
				out[i] = []int{i - 1}
			}
			continue
		}
		for _, n := range nd.Needs() {
			j, ok := index[n]
			switch {
			case !ok:
				return nil, fmt.Errorf("builder: stage %s needs %q: no such stage (stages: %s)", s.Name(), n, stageNames(stages))
			case j >= i:
				return nil, fmt.Errorf("builder: stage %s needs %q, which is listed after it", s.Name(), n)
			}
			out[i] = append(out[i], j)
		}
		slices.Sort(out[i])
		out[i] = slices.Compact(out[i])
	}
	return out, nil
}

// lockedObserver serialises calls to an Observer: stages that run side by side report from their goroutines.
type lockedObserver struct {
	mu sync.Mutex
	o  Observer
}

func (l *lockedObserver) StageStart(name, key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.o.StageStart(name, key)
}

func (l *lockedObserver) StageMiss(name, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.o.StageMiss(name, why)
}

func (l *lockedObserver) StageProgress(name string, fraction float64, note string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.o.StageProgress(name, fraction, note)
}

func (l *lockedObserver) StageDone(r StageResult, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.o.StageDone(r, err)
}

func stageNames(stages []Stage) string {
	s := ""
	for i, st := range stages {
		if i > 0 {
			s += ", "
		}
		s += st.Name()
	}
	return s
}

func short(key string) string {
	if len(key) > 12 {
		return key[:12]
	}
	return key
}

type nopObserver struct{}

func (nopObserver) StageStart(string, string)             {}
func (nopObserver) StageMiss(string, string)              {}
func (nopObserver) StageProgress(string, float64, string) {}
func (nopObserver) StageDone(StageResult, error)          {}
