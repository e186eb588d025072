package builder

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"time"

	"github.com/kiln-project/kiln/builder/cache"
)

// EpochInput is the input the pipeline adds to every stage: the recorded timestamp changes every output.
const EpochInput = "SOURCE_DATE_EPOCH"

// Pipeline runs stages in order, each from the cache when its key is already there.
type Pipeline struct {
	// Stages run in this order; each one's key includes the previous one's.
	Stages []Stage
	Cache  *cache.Cache
	// Log is the build's logger; nil discards.
	Log *slog.Logger
	// Observer is told about each stage (progress bars, plain lines); nil for none.
	Observer Observer
	// SourceDateEpoch is passed to every stage (Env) and added to every stage's inputs.
	SourceDateEpoch int64
	// Rebuild names a stage that runs even if cached, and so do the stages after it; "" for none.
	Rebuild string
}

// Observer follows a pipeline run. Calls come from the goroutine running Pipeline.Run.
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
// output from the cache or runs it. On error the returned Result is nil and every lock is released.
func (p *Pipeline) Run(ctx context.Context) (res *Result, err error) {
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	obs := p.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	if len(p.Stages) == 0 {
		return nil, fmt.Errorf("builder: no stages")
	}
	seen := map[string]bool{}
	rebuildAt := -1
	for i, s := range p.Stages {
		if seen[s.Name()] {
			return nil, fmt.Errorf("builder: stage %q listed twice", s.Name())
		}
		seen[s.Name()] = true
		if s.Name() == p.Rebuild {
			rebuildAt = i
		}
	}
	if p.Rebuild != "" && rebuildAt < 0 {
		return nil, fmt.Errorf("builder: --rebuild %q: no such stage (stages: %s)", p.Rebuild, stageNames(p.Stages))
	}

	inputs := make([]map[string]string, len(p.Stages))
	keys := make([]string, len(p.Stages))
	parent := ""
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
		keys[i] = cache.Key(s.Name(), in, parent)
		parent = keys[i]
	}

	held := &Result{}
	defer func() {
		if err != nil {
			held.Close()
		}
	}()
	outputs, doneKeys := map[string]string{}, map[string]string{}
	parent = ""
	for i, s := range p.Stages {
		name := s.Name()
		slog := log.With("stage", name)
		obs.StageStart(name, keys[i])
		start := time.Now()
		env := &Env{
			Outputs:         maps.Clone(outputs),
			Keys:            maps.Clone(doneKeys),
			Log:             slog,
			Progress:        func(f float64, note string) { obs.StageProgress(name, f, note) },
			SourceDateEpoch: p.SourceDateEpoch,
		}
		req := cache.Request{Stage: name, Inputs: inputs[i], Parent: parent, Force: rebuildAt >= 0 && i >= rebuildAt,
			OnMiss: func(why string) {
				slog.Info("cache miss: running", "key", short(keys[i]), "why", why)
				obs.StageMiss(name, why)
			}}
		e, err := p.Cache.Get(ctx, req, func(ctx context.Context, dir string) error {
			return s.Run(ctx, env, dir)
		})
		r := StageResult{Name: name, Key: keys[i], Inputs: inputs[i], Duration: time.Since(start)}
		if err != nil {
			obs.StageDone(r, err)
			return nil, fmt.Errorf("builder: stage %s: %w", name, err)
		}
		held.entries = append(held.entries, e)
		r.Hit, r.Why, r.BuildDuration, r.Dir = e.Hit, e.Why, time.Duration(e.Meta.Duration), e.Out()
		if e.Hit {
			slog.Info("cache hit", "key", short(keys[i]))
		} else {
			slog.Info("built", "key", short(keys[i]), "duration", r.Duration.Round(time.Millisecond))
		}
		obs.StageDone(r, nil)
		held.Stages = append(held.Stages, r)
		outputs[name] = e.Out()
		doneKeys[name] = keys[i]
		parent = keys[i]
	}
	return held, nil
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
