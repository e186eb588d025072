// Command publish measures `kiln publish aws`'s upload against the floor it cannot beat on this machine:
// reading and hashing the same image. It publishes the image to the local AWS fake (cloud/aws/awsfake) over
// loopback HTTP, with the real SDK clients, signing, checksums and workers, and prints a table: the upload
// time, the read+hash time, their ratio (target ≤ 1.5×), and the blocks and bytes zero-block skipping saved.
// The fake keeps the blocks in memory and checks every checksum, on the same cores as the uploader.
//
//	go run ./bench/publish -image out/node.raw
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kiln-project/kiln/cloud/aws/awsconf"
	"github.com/kiln-project/kiln/cloud/aws/awsfake"
	"github.com/kiln-project/kiln/cloud/aws/ebsupload"
	"github.com/kiln-project/kiln/cloud/aws/publish"
)

func main() {
	image := flag.String("image", "out/node.raw", "raw node image (manifest.json beside it)")
	workers := flag.Int("parallel", ebsupload.DefaultWorkers, "blocks uploaded at once")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the publish (uploader and fake together) to this file")
	flag.Parse()
	if err := run(*image, *workers, *cpuProfile); err != nil {
		fmt.Fprintln(os.Stderr, "bench/publish:", err)
		os.Exit(1)
	}
}

func run(image string, workers int, cpuProfile string) error {
	ctx := context.Background()
	st, err := os.Stat(image)
	if err != nil {
		return err
	}
	// The first read warms the page cache, so both timed runs read from memory and compare the work, not
	// the disk.
	if _, err := readAndHash(image); err != nil {
		return err
	}
	hashTime, err := readAndHash(image)
	if err != nil {
		return err
	}

	fake := awsfake.New()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	cfg, err := awsconf.Load(ctx, awsconf.Options{Region: "us-east-1", Endpoint: srv.URL,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDBENCH", "bench", "")})
	if err != nil {
		return err
	}
	e, c := publish.Clients(cfg)
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	res, err := publish.Publish(ctx, e, c, cfg.Region, publish.Options{Image: image, Name: "kiln-bench",
		PollInterval: 10 * time.Millisecond, Upload: ebsupload.Options{Workers: workers}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	upload := time.Since(start)

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "figure\tvalue\tnote\n")
	fmt.Fprintf(w, "image\t%s, %d MiB apparent\t%d blocks of 512 KiB\n", image, st.Size()>>20, res.Blocks)
	fmt.Fprintf(w, "read + sha256 of the whole image\t%.2f s\t%.0f MB/s, page cache warm\n", hashTime.Seconds(), float64(st.Size())/1e6/hashTime.Seconds())
	fmt.Fprintf(w, "publish to the local fake\t%.2f s\t%d workers; start, %d puts, complete, wait, register\n", upload.Seconds(), workers, res.Sent)
	ratio := upload.Seconds() / hashTime.Seconds()
	verdict := "met"
	if ratio > 1.5 {
		verdict = "missed"
	}
	fmt.Fprintf(w, "publish / read+hash\t%.2f×\ttarget ≤ 1.5×: %s\n", ratio, verdict)
	fmt.Fprintf(w, "zero blocks skipped\t%d of %d\t%d MiB not sent (%.0f %% of the image)\n", res.Skipped, res.Blocks, res.SkippedBytes>>20,
		100*float64(res.SkippedBytes)/float64(st.Size()))
	fmt.Fprintf(w, "bytes sent\t%d MiB\t%.0f MB/s of block data\n", int64(res.Sent)*ebsupload.BlockSize>>20,
		float64(res.Sent)*ebsupload.BlockSize/1e6/upload.Seconds())
	return w.Flush()
}

// readAndHash reads the image front to back and hashes every byte: the least an uploader that checksums what
// it sends must do.
func readAndHash(path string) (time.Duration, error) {
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 4<<20)); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return time.Since(start), nil
}
