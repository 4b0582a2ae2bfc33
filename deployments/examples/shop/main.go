// Command shop runs the example service: an HTTP API whose pricing blocks and catalog endpoint
// scalpel can roll back one by one. Point it at the NATS server `scalpel serve` embeds, apply its
// manifest (`scalpel catalog apply -f`, shop.Manifest), announce releases with `scalpel deploy`,
// and pick the release to start with --release.
//
//	go run ./deployments/examples/shop --nats-url nats://127.0.0.1:4222 --listen 127.0.0.1:8081 --release 2.0
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalpel-dev/scalpel/deployments/examples/shop/shop"
	"github.com/scalpel-dev/scalpel/schemas"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		natsURL  = flag.String("nats-url", nats.DefaultURL, "NATS server scalpel runs on")
		listen   = flag.String("listen", "127.0.0.1:8081", "HTTP address of the shop")
		release  = flag.String("release", shop.V1, "release to start with: 1.0 or 2.0 (scalpel's desired state in scalpel_active still wins)")
		instance = flag.String("instance", "shop-1", "instance name in acks")
		agg      = flag.Duration("aggregate", time.Second, "telemetry aggregation interval; 0 sends one event per request")
		prefix   = flag.String("subject-prefix", "", "subject prefix scalpel runs with")
	)
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nc, err := nats.Connect(*natsURL, nats.Name("shop-"+*instance), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected; serving on", "err", err) }),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("NATS reconnected") }))
	if err != nil {
		return err
	}
	defer nc.Drain()
	s, err := shop.New(nc, shop.Options{Instance: *instance, Aggregate: *agg, Subjects: schemas.Subjects{Prefix: *prefix}, Logger: log})
	if err != nil {
		return err
	}
	if err := s.Release(*release); err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = s.Close(sctx)
	}()
	log.Info("shop serving", "addr", ln.Addr().String(), "release", *release)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
