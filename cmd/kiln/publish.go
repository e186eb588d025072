package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/kiln-project/kiln/cloud/aws/awsconf"
	"github.com/kiln-project/kiln/cloud/aws/ebsupload"
	"github.com/kiln-project/kiln/cloud/aws/publish"
)

// newPublishCmd is `kiln publish`: a built image into a cloud's image registry.
func newPublishCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "publish",
		Short: "Publish a built image to a cloud (aws: an AMI)",
	}
	cmd.AddCommand(newPublishAWSCmd())
	return cmd
}

func newPublishAWSCmd() *cobra.Command {
	var (
		o        publish.Options
		conf     awsconf.Options
		asJSON   bool
		progress bool
	)
	c := &cobra.Command{
		Use:   "aws --image OUT/node.raw --name NAME [--region R] [--profile P] [--endpoint-url URL] [--json]",
		Short: "Upload the raw image into an EBS snapshot and register it as an AMI",
		Long: `Uploads the raw image straight into an EBS snapshot with the EBS direct APIs (only its non-zero 512 KiB
blocks, in parallel, each with its SHA-256) and registers an AMI on it: x86_64, UEFI, ENA, IMDSv2 only, a gp3
root volume, tagged Name=NAME and kiln:build=<manifest.json's build hash>. No S3 bucket, no vmimport role: it
takes as long as the upload. A build that already has an AMI is found by that tag and not uploaded again.
Credentials and region come from the standard AWS chain (environment, --profile, instance role); the policy
it needs is in docs/aws.md. Prints the AMI id (with --json, a JSON object).`,
		Example: `  kiln publish aws --image out/node.raw --name kiln-node-2026-12-03 --region eu-central-1
  AWS_PROFILE=images kiln publish aws --image out/node.raw --name kiln-node --json | jq -r .image_id`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := awsconf.Load(ctx, conf)
			if err != nil {
				return err
			}
			ui := newUploadProgress(cmd.ErrOrStderr(), progress)
			o.Log = ui.log
			o.Upload.Started, o.Upload.Block = ui.started, ui.block
			e, c := publish.Clients(cfg)
			res, err := publish.Publish(ctx, e, c, cfg.Region, o)
			ui.done(err == nil)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			if res.Reused {
				fmt.Fprintf(out, "%s (already published: build %s is AMI %s in %s; nothing uploaded)\n", res.ImageID, res.Build[:12], res.Name, res.Region)
				return nil
			}
			fmt.Fprintf(out, "%s (%s in %s; %d of %d blocks sent, %d MiB of zeros skipped, %.0fs)\n", res.ImageID, res.Name, res.Region,
				res.Sent, res.Blocks, res.SkippedBytes>>20, res.Seconds)
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&o.Image, "image", "out/node.raw", "raw image of a build (manifest.json beside it gives the build hash)")
	fl.StringVar(&o.Name, "name", "", "AMI name, unique in the account and region (required)")
	fl.StringVar(&conf.Region, "region", "", "AWS region (default: AWS_REGION or the profile's)")
	fl.StringVar(&conf.Profile, "profile", "", "profile of ~/.aws/config (default: AWS_PROFILE or default)")
	fl.StringVar(&conf.Endpoint, "endpoint-url", "", "send EBS and EC2 calls to this URL (a local fake, a VPC endpoint)")
	fl.IntVar(&o.Upload.Workers, "parallel", ebsupload.DefaultWorkers, "blocks uploaded at once")
	fl.BoolVar(&asJSON, "json", false, "print the result as JSON on stdout")
	fl.BoolVar(&progress, "progress", true, "draw a progress bar when stderr is a terminal")
	_ = c.MarkFlagRequired("name")
	return c
}

// uploadProgress shows the upload: a bar on a terminal (blocks sent, zero blocks skipped, MB/s, time left),
// else a log line per 10 %.
type uploadProgress struct {
	log           *slog.Logger
	p             *mpb.Progress
	bar           *mpb.Bar
	sent, skipped atomic.Int64
	total         int64
	mu            sync.Mutex // guards lastTenth
	lastTenth     int64
	begin         time.Time
	terminal      bool
}

func newUploadProgress(w io.Writer, enabled bool) *uploadProgress {
	u := &uploadProgress{begin: time.Now()}
	if f, ok := w.(*os.File); ok && enabled && isTerminal(f) {
		u.terminal = true
		u.p = mpb.New(mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(200*time.Millisecond))
		u.log = slog.New(slog.NewTextHandler(u.p, nil))
		return u
	}
	u.log = slog.New(slog.NewTextHandler(w, nil))
	return u
}

func (u *uploadProgress) started(id string, blocks int) {
	u.total, u.begin = int64(blocks), time.Now()
	if !u.terminal {
		return
	}
	u.bar = u.p.AddBar(int64(blocks),
		mpb.PrependDecorators(decor.Name(id+" "), decor.CountersNoUnit("%d/%d blocks", decor.WCSyncSpace)),
		mpb.AppendDecorators(
			decor.Any(func(decor.Statistics) string {
				return fmt.Sprintf("sent %d, zero %d, %.1f MB/s", u.sent.Load(), u.skipped.Load(), u.rate())
			}, decor.WCSyncSpace),
			decor.OnComplete(decor.EwmaETA(decor.ET_STYLE_GO, 30, decor.WCSyncSpace), " done"),
		))
}

// rate is MB/s of block data sent since the snapshot started.
func (u *uploadProgress) rate() float64 {
	s := time.Since(u.begin).Seconds()
	if s <= 0 {
		return 0
	}
	return float64(u.sent.Load()*ebsupload.BlockSize) / 1e6 / s
}

func (u *uploadProgress) block(sent bool) {
	if sent {
		u.sent.Add(1)
	} else {
		u.skipped.Add(1)
	}
	if u.bar != nil {
		u.bar.EwmaIncrement(time.Since(u.begin) / time.Duration(max(1, u.sent.Load()+u.skipped.Load())))
		return
	}
	if u.total == 0 {
		return
	}
	n := u.sent.Load() + u.skipped.Load()
	tenth := n * 10 / u.total
	u.mu.Lock()
	defer u.mu.Unlock()
	if tenth > u.lastTenth {
		u.lastTenth = tenth
		u.log.Info("upload", "done", fmt.Sprintf("%d%%", tenth*10), "sent", u.sent.Load(), "zero_skipped", u.skipped.Load(),
			"mb_per_s", fmt.Sprintf("%.1f", u.rate()))
	}
}

func (u *uploadProgress) done(ok bool) {
	if u.p == nil {
		return
	}
	if u.bar != nil && !ok {
		u.bar.Abort(false)
	}
	u.p.Wait()
}
