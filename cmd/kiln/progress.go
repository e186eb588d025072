package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"

	"github.com/kiln-project/kiln/builder"
)

// progress shows a build as it runs: bars on a terminal, log lines otherwise (CI logs, pipes).
type progress interface {
	builder.Observer
	// Logger is the build's logger, writing where the progress display can interleave it.
	Logger() *slog.Logger
	// Wait flushes the display; call before printing anything else.
	Wait()
}

func newProgress(w io.Writer) progress {
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		return newBars(f)
	}
	return &lines{log: slog.New(slog.NewTextHandler(w, nil)), last: map[string]float64{}}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// lines logs stage progress as plain lines, at most one per 10% step, or per changed note once noteEvery has
// passed, so long stages stay visible in CI logs without flooding them (the packages stage's note changes
// with every package).
type lines struct {
	log    *slog.Logger
	mu     sync.Mutex // guards last, note and noteAt
	last   map[string]float64
	note   string
	noteAt time.Time
}

// noteEvery is the shortest gap between two lines that differ only in their note.
const noteEvery = 10 * time.Second

func (l *lines) Logger() *slog.Logger { return l.log }
func (l *lines) Wait()                {}

func (l *lines) StageStart(name, key string) {}

func (l *lines) StageMiss(name, why string) {}

func (l *lines) StageProgress(name string, f float64, note string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if f-l.last[name] < 0.1 && (note == l.note || now.Sub(l.noteAt) < noteEvery) {
		return
	}
	l.last[name], l.note, l.noteAt = f, note, now
	l.log.Info("progress", "stage", name, "done", fmt.Sprintf("%.0f%%", f*100), "note", note)
}

func (l *lines) StageDone(r builder.StageResult, err error) {
	if err != nil {
		l.log.Error("stage failed", "stage", r.Name, "after", r.Duration.Round(time.Millisecond))
	}
}

// bars draws one mpb bar per stage; log lines print above the bars.
type bars struct {
	p   *mpb.Progress
	log *slog.Logger

	mu   sync.Mutex // guards bar and note
	bar  map[string]*mpb.Bar
	note map[string]string
}

// barTotal is the resolution of a bar: stages report fractions.
const barTotal = 1000

func newBars(w io.Writer) *bars {
	p := mpb.New(mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(200*time.Millisecond))
	return &bars{p: p, log: slog.New(slog.NewTextHandler(p, nil)), bar: map[string]*mpb.Bar{}, note: map[string]string{}}
}

func (b *bars) Logger() *slog.Logger { return b.log }
func (b *bars) Wait()                { b.p.Wait() }

func (b *bars) StageStart(name, key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.note[name] = "lookup " + key[:12]
	b.bar[name] = b.p.AddBar(barTotal,
		mpb.PrependDecorators(decor.Name(fmt.Sprintf("%-9s", name)), decor.Elapsed(decor.ET_STYLE_GO, decor.WCSyncSpace)),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.Any(func(decor.Statistics) string {
			b.mu.Lock()
			defer b.mu.Unlock()
			return " " + b.note[name]
		})),
	)
}

func (b *bars) StageMiss(name, why string) {
	b.setNote(name, "running: "+why)
}

func (b *bars) StageProgress(name string, f float64, note string) {
	b.mu.Lock()
	bar := b.bar[name]
	b.note[name] = note
	b.mu.Unlock()
	if bar != nil {
		bar.SetCurrent(int64(f * barTotal))
	}
}

func (b *bars) StageDone(r builder.StageResult, err error) {
	b.mu.Lock()
	bar := b.bar[r.Name]
	switch {
	case err != nil:
		b.note[r.Name] = "failed"
	case r.Hit:
		b.note[r.Name] = "cached"
	default:
		b.note[r.Name] = "built"
	}
	b.mu.Unlock()
	if bar == nil {
		return
	}
	if err != nil {
		bar.Abort(false)
		return
	}
	bar.SetTotal(-1, true) // complete at whatever the stage last reported
}

func (b *bars) setNote(name, note string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.note[name] = note
}
