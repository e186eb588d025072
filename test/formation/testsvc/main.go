// Command testsvc is the service the formation proof deploys on the swarm: a static HTTP server that answers
// GET with its hostname (swarm sets it to the node's, see the test), so a client can tell which node served it,
// and stores records POSTed to /records/NAME on the shared volume, so the self-healing proof can write through
// the VIP. Built with CGO_ENABLED=0 and shipped alone in a docker image (no registry, no base image).
//
// `testsvc probe HOST:PORT…` instead tries a TCP connection to each and prints one line per target:
// "HOST:PORT open", or "HOST:PORT closed: <why>". The security proof runs it in containers, whose image has
// no shell or tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kiln-project/kiln/test/formation/testsvc/records"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "probe" {
		probe(os.Args[2:])
		return
	}
	addr := ":80"
	if a := os.Getenv("TESTSVC_ADDR"); a != "" {
		addr = a
	}
	host, err := os.Hostname()
	if err != nil {
		log.Fatalf("testsvc: hostname: %v", err)
	}
	// TESTSVC_DATA is the bind mount of a directory on /var/data; without it POST /records answers 503.
	srv := &http.Server{Addr: addr, Handler: records.Handler(host, os.Getenv("TESTSVC_DATA")), ReadHeaderTimeout: 10 * time.Second}

	// PID 1 in a container ignores SIGTERM unless it handles it: stop cleanly so `docker service rm` is quick.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("testsvc: %s listening on %s", host, addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("testsvc: %v", err)
	}
}

// probe dials each target once, 3 s at most, and says what happened.
func probe(targets []string) {
	for _, t := range targets {
		c, err := net.DialTimeout("tcp", t, 3*time.Second)
		if err != nil {
			fmt.Printf("%s closed: %v\n", t, err)
			continue
		}
		c.Close()
		fmt.Printf("%s open\n", t)
	}
}
