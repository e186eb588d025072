// Package ebsupload writes a raw disk image straight into a new EBS snapshot with the EBS direct APIs
// (StartSnapshot, PutSnapshotBlock, CompleteSnapshot): no S3 bucket, no import task, no vmimport role, so the
// snapshot takes as long as the upload. Only blocks holding a non-zero byte are sent (a snapshot reads zeros
// where nothing was written), in parallel, each with its SHA-256, and the snapshot is completed with the
// changed-block count and the aggregate checksum, so EBS refuses a snapshot that lacks or garbles a block.
package ebsupload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"

	"github.com/kiln-project/kiln/cloud/aws/awserr"
)

// BlockSize is EBS direct's block size: every PutSnapshotBlock carries exactly this much.
const BlockSize = 512 << 10

// API is the part of *ebs.Client the upload uses.
type API interface {
	StartSnapshot(ctx context.Context, in *ebs.StartSnapshotInput, opts ...func(*ebs.Options)) (*ebs.StartSnapshotOutput, error)
	PutSnapshotBlock(ctx context.Context, in *ebs.PutSnapshotBlockInput, opts ...func(*ebs.Options)) (*ebs.PutSnapshotBlockOutput, error)
	CompleteSnapshot(ctx context.Context, in *ebs.CompleteSnapshotInput, opts ...func(*ebs.Options)) (*ebs.CompleteSnapshotOutput, error)
}

// Defaults of the upload's bounds.
const (
	// DefaultWorkers is how many blocks are in flight at once: enough to fill a link whose round trip is
	// ~100 ms at 512 KiB per request, few enough that EBS's per-snapshot request rate does not throttle.
	DefaultWorkers = 16
	// DefaultRequestTimeout bounds one attempt of one call: a 512 KiB block needs seconds even on a slow
	// uplink, and a stalled connection must not hold a worker for the SDK's unbounded default.
	DefaultRequestTimeout = 60 * time.Second
	// DefaultAttempts bounds the attempts of one call that keeps failing transiently.
	DefaultAttempts = 8
	// DefaultNotFoundWindow is how long after StartSnapshot "snapshot does not exist" counts as EBS not having
	// caught up with its own answer yet (it can take a minute or two) rather than as a real error.
	DefaultNotFoundWindow = 2 * time.Minute
)

// Options configure an upload.
type Options struct {
	// Path is the raw image. Its size, rounded up to GiB, is the snapshot's volume size.
	Path string
	// Description and Tags go on the snapshot.
	Description string
	Tags        map[string]string
	// Workers, RequestTimeout, Attempts and NotFoundWindow override the defaults above.
	Workers        int
	RequestTimeout time.Duration
	Attempts       int
	NotFoundWindow time.Duration
	// Backoff is the first pause between attempts (default 250 ms); it doubles up to 32× itself, with jitter.
	Backoff time.Duration
	// Started is called once with the snapshot id and the number of blocks the image spans, before any block
	// is read; Block after each block is sent or skipped (concurrently, from several goroutines).
	Started func(snapshotID string, blocks int)
	Block   func(sent bool)
	Log     *slog.Logger
}

// Result says what was uploaded.
type Result struct {
	// SnapshotID is set as soon as the snapshot exists, also when Upload fails: the caller must delete it.
	SnapshotID string
	// VolumeSize is the snapshot's size in GiB.
	VolumeSize int64
	// Blocks is how many blocks the image spans; Sent of them held data, Skipped were all zeros.
	Blocks, Sent, Skipped int
	// Checksum is the aggregate checksum CompleteSnapshot was given (base64 SHA-256, LINEAR).
	Checksum string
}

// SkippedBytes is how many bytes the zero-block skipping did not send.
func (r Result) SkippedBytes() int64 { return int64(r.Skipped) * BlockSize }

func (o *Options) defaults() {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.NotFoundWindow <= 0 {
		o.NotFoundWindow = DefaultNotFoundWindow
	}
	if o.Backoff <= 0 {
		o.Backoff = 250 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Started == nil {
		o.Started = func(string, int) {}
	}
	if o.Block == nil {
		o.Block = func(bool) {}
	}
}

// Upload creates a snapshot of the image at o.Path and completes it. On error the returned Result still names
// the snapshot if one was started; it is then incomplete (pending or error) and must not be used.
func Upload(ctx context.Context, api API, o Options) (Result, error) {
	o.defaults()
	f, err := os.Open(o.Path)
	if err != nil {
		return Result{}, fmt.Errorf("ebs: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Result{}, fmt.Errorf("ebs: %w", err)
	}
	if st.Size() == 0 {
		return Result{}, fmt.Errorf("ebs: %s is empty", o.Path)
	}
	var res Result
	res.VolumeSize = (st.Size() + 1<<30 - 1) >> 30
	res.Blocks = int((st.Size() + BlockSize - 1) / BlockSize)

	var tags []types.Tag
	for k, v := range o.Tags {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	in := &ebs.StartSnapshotInput{VolumeSize: aws.Int64(res.VolumeSize), Tags: tags, Description: aws.String(o.Description)}
	if o.Description == "" {
		in.Description = nil
	}
	var out *ebs.StartSnapshotOutput
	err = o.call(ctx, "start snapshot", "ebs:StartSnapshot", time.Time{}, func(cctx context.Context) (err error) {
		out, err = api.StartSnapshot(cctx, in)
		return err
	})
	if err != nil {
		return res, err
	}
	started := time.Now()
	res.SnapshotID = aws.ToString(out.SnapshotId)
	if bs := aws.ToInt32(out.BlockSize); bs != 0 && bs != BlockSize {
		return res, fmt.Errorf("ebs: snapshot %s has %d-byte blocks, this uploader sends %d", res.SnapshotID, bs, BlockSize)
	}
	o.Log.Info("snapshot started", "snapshot", res.SnapshotID, "size_gib", res.VolumeSize, "blocks", res.Blocks)
	o.Started(res.SnapshotID, res.Blocks)

	digests, err := o.putBlocks(ctx, api, f, res, started)
	if err != nil {
		return res, err
	}
	agg := sha256.New()
	for _, d := range digests {
		if d != nil {
			agg.Write(d)
			res.Sent++
		}
	}
	res.Skipped = res.Blocks - res.Sent
	res.Checksum = base64.StdEncoding.EncodeToString(agg.Sum(nil))
	err = o.call(ctx, "complete snapshot "+res.SnapshotID, "ebs:CompleteSnapshot", time.Time{}, func(cctx context.Context) error {
		_, err := api.CompleteSnapshot(cctx, &ebs.CompleteSnapshotInput{SnapshotId: aws.String(res.SnapshotID),
			ChangedBlocksCount: aws.Int32(int32(res.Sent)), Checksum: aws.String(res.Checksum),
			ChecksumAlgorithm: types.ChecksumAlgorithmChecksumAlgorithmSha256, ChecksumAggregationMethod: types.ChecksumAggregationMethodChecksumAggregationLinear})
		return err
	})
	if err != nil {
		return res, err
	}
	o.Log.Info("snapshot completed", "snapshot", res.SnapshotID, "sent", res.Sent, "skipped_zero", res.Skipped)
	return res, nil
}

// block is one block read from the image and not all zeros.
type block struct {
	index int32
	data  []byte
}

// putBlocks reads the image once, front to back, and has Workers goroutines hash and send the non-zero blocks.
// It returns each block's SHA-256 by index (nil for a skipped block), or the first error after stopping the
// rest.
func (o *Options) putBlocks(ctx context.Context, api API, f io.ReaderAt, res Result, started time.Time) ([][]byte, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	digests := make([][]byte, res.Blocks)
	// Each buffer is one block; twice the workers keeps the reader ahead without holding the image in memory.
	free := make(chan []byte, 2*o.Workers)
	for range 2 * o.Workers {
		free <- make([]byte, BlockSize)
	}
	work := make(chan block)
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Go(func() {
			for b := range work {
				sum := sha256.Sum256(b.data)
				digests[b.index] = sum[:]
				err := o.putBlock(ctx, api, res.SnapshotID, b, sum[:], started)
				free <- b.data
				if err != nil {
					cancel(err)
					continue // drain: the reader stops on ctx
				}
				o.Block(true)
			}
		})
	}
	readErr := func() error {
		defer close(work)
		for i := range res.Blocks {
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return nil
			}
			n, err := f.ReadAt(buf, int64(i)*BlockSize)
			if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
				return fmt.Errorf("ebs: read block %d of %s: %w", i, o.Path, err)
			}
			clear(buf[n:]) // the image's tail pads the last block with zeros
			if allZero(buf) {
				free <- buf
				o.Block(false)
				continue
			}
			select {
			case work <- block{index: int32(i), data: buf}:
			case <-ctx.Done():
				return nil
			}
		}
		return nil
	}()
	wg.Wait()
	if readErr != nil {
		return nil, readErr
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return digests, nil
}

var zeros = make([]byte, BlockSize)

func allZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }

func (o *Options) putBlock(ctx context.Context, api API, id string, b block, sum []byte, started time.Time) error {
	checksum := base64.StdEncoding.EncodeToString(sum)
	return o.call(ctx, fmt.Sprintf("put block %d", b.index), "ebs:PutSnapshotBlock", started, func(cctx context.Context) error {
		_, err := api.PutSnapshotBlock(cctx, &ebs.PutSnapshotBlockInput{SnapshotId: aws.String(id), BlockIndex: aws.Int32(b.index),
			BlockData: bytes.NewReader(b.data), DataLength: aws.Int32(BlockSize), Checksum: aws.String(checksum),
			ChecksumAlgorithm: types.ChecksumAlgorithmChecksumAlgorithmSha256})
		return err
	})
}

// call runs one API call with a per-attempt timeout, retrying transient failures with backoff. "Snapshot does
// not exist" is transient until NotFoundWindow after started (zero: never). Permanent errors stop at once,
// worded to name what to fix.
func (o *Options) call(ctx context.Context, what, action string, started time.Time, fn func(context.Context) error) error {
	backoff := o.Backoff
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, o.RequestTimeout)
		err := fn(cctx)
		cancel()
		if err == nil {
			return nil
		}
		notFound := !started.IsZero() && awserr.Code(err) == "ResourceNotFoundException" && time.Since(started) < o.NotFoundWindow
		retry := notFound || (awserr.Transient(ctx, err) && attempt < o.Attempts)
		if !retry {
			if ctx.Err() != nil {
				return fmt.Errorf("ebs: %s: %w", what, context.Cause(ctx))
			}
			return fmt.Errorf("ebs: %s (attempt %d): %w", what, attempt, awserr.Explain(err, action))
		}
		pause := backoff/2 + rand.N(backoff/2+1)
		o.Log.Debug("ebs: retrying", "call", what, "attempt", attempt, "in", pause, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("ebs: %s: %w", what, context.Cause(ctx))
		case <-time.After(pause):
		}
		backoff = min(2*backoff, 32*o.Backoff)
	}
}
