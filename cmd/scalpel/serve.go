package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/scalpel-dev/scalpel/internal/api"
	"github.com/scalpel-dev/scalpel/internal/audit"
	"github.com/scalpel-dev/scalpel/internal/config"
	"github.com/scalpel-dev/scalpel/internal/embedded"
	"github.com/scalpel-dev/scalpel/internal/pipeline"
)

func init() { register(newServeCmd) }

func newServeCmd() *cobra.Command {
	var (
		cfgFile     string
		checkConfig bool
		printConfig bool
		natsListen  string
		dataDir     string
		httpListen  string
		webConfig   string
		natsURL     string
		partitions  string
		role        string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run all stages (ingest, detect, decide, actuate) on an embedded NATS server by default",
		Long: `serve runs scalpel. With no flags it starts an embedded nats-server with JetStream (file storage
under ./data) listening on 127.0.0.1:4222, so services, the nats CLI and other scalpel commands can
connect; creates every stream, KV bucket and object store it needs (idempotently); and runs all
stages. With --nats-url it uses an existing NATS server or cluster instead.

Several serve processes may share one server: one consumes the telemetry, detects and decides,
the others stand by and take over within decide.lease_ttl if it dies (scalpel_stage_active on
/metrics says which is active). Every process carries out rollback commands. To spread the
telemetry over several processes, cut it into partitions by service (ingest.partitions: N) and
start each process with --partition K (0 to N-1), or several (--partition 0,1): each partition
is consumed by one process, processes given the same K stand by for it, and one process of all
decides. With --partition auto, the processes share the partitions out among themselves, and
again whenever one joins or leaves. /metrics labels each partition's series with partition="K".
--role detect keeps a process from deciding; --role decide decides and consumes no telemetry, on
the event time the consumers share in scalpel_state.

Detection runs on event time. When no telemetry comes in for ingest.tick_after (10s), the active
process publishes clock ticks on telemetry._scalpel.clock (one reading part of the telemetry,
ingest.filter_subject, on telemetry._scalpel.<its durable>) so that event time goes on: a
service that falls silent after a deploy is found, and decide recommends rolling it back.

HTTP endpoints (default 127.0.0.1:8080): /healthz, /readyz (which says whether this process is
active or stands by), /metrics (Prometheus), and a read-only JSON API under /api/v1/ (GET
/api/v1/ lists it): status, decisions, anomalies, incidents and their stories, versions, catalog.
They speak plain HTTP to anyone who reaches them; --web-config-file (http.web_config_file) turns on
TLS and basic authentication with the web configuration file Prometheus reads.
SIGINT or SIGTERM drains the consumers, so no acknowledged work is lost, and exits.`,
		Example: `  scalpel serve
  scalpel serve --nats-listen 0.0.0.0:4222 --data-dir /var/lib/scalpel
  scalpel serve --nats-url nats://nats.internal:4222 --creds scalpel.creds
  scalpel serve --config scalpel.yaml --nats-url nats://nats.internal:4222 --partition auto
  scalpel serve --config scalpel.yaml --check-config
  scalpel serve --http-listen 0.0.0.0:8443 --web-config-file web.yaml   # TLS and basic auth
  scalpel serve --print-config > scalpel.yaml     # every setting with its default`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgFile)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			if f.Changed("nats-listen") {
				cfg.NATS.Listen = natsListen
			}
			if f.Changed("data-dir") {
				cfg.NATS.DataDir = dataDir
			}
			if f.Changed("http-listen") {
				cfg.HTTP.Listen = httpListen
			}
			if f.Changed("web-config-file") {
				cfg.HTTP.WebConfigFile = webConfig
			}
			if f.Changed("nats-url") {
				cfg.NATS.URL = natsURL
			}
			if cmd.Flags().Changed("creds") {
				cfg.NATS.Creds = global.creds
			}
			if cmd.Flags().Changed("subject-prefix") {
				cfg.NATS.SubjectPrefix = global.prefix
			}
			if f.Changed("role") {
				cfg.Role = role
			}
			parts, auto, err := parsePartitions(partitions, cfg.Ingest.Partitions)
			if err != nil {
				return err
			}
			if len(parts) > 0 {
				cfg.Ingest.Partition = &parts[0]
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			cfgs, err := perPartition(cfg, parts)
			if err != nil {
				return err
			}
			if printConfig {
				b, err := yaml.Marshal(cfg)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			if checkConfig {
				src := cfgFile
				if src == "" {
					src = "built-in defaults"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "configuration OK (%s)\n", src)
				return nil
			}
			return serve(cmd.Context(), cfgs, auto)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "configuration file (YAML); flags override it")
	f.BoolVar(&checkConfig, "check-config", false, "validate the configuration and exit")
	f.BoolVar(&printConfig, "print-config", false, "print the effective configuration (defaults, file and flags) as YAML and exit")
	f.StringVar(&natsListen, "nats-listen", "127.0.0.1:4222", "client address of the embedded NATS server (HOST:PORT)")
	f.StringVar(&dataDir, "data-dir", "./data", "directory of the embedded server's JetStream store")
	f.StringVar(&httpListen, "http-listen", "127.0.0.1:8080", "address of /healthz, /readyz, /metrics and /api/v1/; empty disables")
	f.StringVar(&webConfig, "web-config-file", "", "TLS and basic authentication for the HTTP endpoints: a web configuration file as Prometheus reads it (http.web_config_file)")
	f.StringVar(&natsURL, "nats-url", "", "use this NATS server instead of embedding one (e.g. nats://host:4222)")
	f.StringVar(&role, "role", "all", "all: ingest, detect, and decide when this process holds the decide lease; detect: never decide; decide: decide only (role)")
	f.StringVar(&partitions, "partition", "", "consume only these partitions of the telemetry, e.g. 0 or 0,1 (ingest.partition; ingest.partitions says how many there are), or auto: a share of them, as the processes alive divide them")
	return cmd
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// connectServer embeds a server or connects to cfg.NATS.URL. The returned cleanup drains the
// connection and shuts the embedded server down.
func connectServer(cfg config.Config, log *slog.Logger) (*nats.Conn, jetstream.JetStream, *server.Server, func(), error) {
	var (
		srv  *server.Server
		nc   *nats.Conn
		err  error
		opts = []nats.Option{nats.Name("scalpel-serve"), nats.MaxReconnects(-1),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					log.Warn("disconnected from NATS", "err", err)
				}
			}),
			nats.ReconnectHandler(func(c *nats.Conn) { log.Info("reconnected to NATS", "url", c.ConnectedUrl()) }),
		}
	)
	if cfg.NATS.URL == "" {
		srv, err = embedded.Start(embedded.Options{Listen: cfg.NATS.Listen, DataDir: cfg.NATS.DataDir, Logger: log.With("component", "nats-server")})
		if err != nil {
			return nil, nil, nil, nil, err
		}
		// In-process connection: no TCP on the hot path between the embedded server and the stages.
		nc, err = nats.Connect(srv.ClientURL(), append(opts, nats.InProcessServer(srv))...)
	} else {
		if cfg.NATS.Creds != "" {
			opts = append(opts, nats.UserCredentials(cfg.NATS.Creds))
		}
		nc, err = nats.Connect(cfg.NATS.URL, opts...)
	}
	if err != nil {
		if srv != nil {
			srv.Shutdown()
		}
		return nil, nil, nil, nil, fmt.Errorf("connect to NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		if srv != nil {
			srv.Shutdown()
		}
		return nil, nil, nil, nil, err
	}
	cleanup := func() {
		_ = nc.Drain()
		for i := 0; i < 100 && !nc.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if srv != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	}
	return nc, js, srv, cleanup, nil
}

// startPipelines starts one pipeline per partition the process consumes (cfgs, perPartition),
// each with its own durable, lease and detector: a partition's standby in another process takes
// over that partition alone. Their metrics carry partition="K" when there are several.
func startPipelines(ctx context.Context, cfgs []config.Config, js jetstream.JetStream, log *slog.Logger, reg prometheus.Registerer, bal *pipeline.Balancer) ([]*pipeline.Pipeline, error) {
	var ps []*pipeline.Pipeline
	for _, c := range cfgs {
		o := pipeline.Options{Config: c, JS: js, Logger: log, Registry: reg, Balancer: bal}
		if len(cfgs) > 1 {
			k := strconv.Itoa(*c.Ingest.Partition)
			o.Logger = log.With("partition", k)
			o.Registry = prometheus.WrapRegistererWith(prometheus.Labels{"partition": k}, reg)
		}
		p, err := pipeline.New(o)
		if err == nil {
			startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
			err = p.Start(startCtx)
			cancel()
		}
		if err != nil {
			for _, p := range ps {
				p.Stop()
			}
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// parsePartitions reads --partition: a list of partitions, or auto, which is every one of the n
// the stream is cut into, shared out with the other processes (pipeline.Balancer).
func parsePartitions(flag string, n int) (parts []int, auto bool, err error) {
	switch flag {
	case "":
		return nil, false, nil
	case "auto":
		if n < 1 {
			return nil, false, errors.New("--partition auto shares out the partitions the stream is cut into, but ingest.partitions is 0: set it in --config")
		}
		for k := range n {
			parts = append(parts, k)
		}
		return parts, true, nil
	}
	for _, f := range strings.Split(flag, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, false, fmt.Errorf("--partition %q: want partition numbers (0,1) or auto", flag)
		}
		parts = append(parts, k)
	}
	return parts, false, nil
}

// perPartition is cfg once for each of the partitions a process consumes: cfg alone when it
// names one or none.
func perPartition(cfg config.Config, partitions []int) ([]config.Config, error) {
	if len(partitions) <= 1 {
		return []config.Config{cfg}, nil
	}
	out := make([]config.Config, 0, len(partitions))
	seen := map[int]bool{}
	for _, k := range partitions {
		if seen[k] {
			return nil, fmt.Errorf("--partition names %d twice", k)
		}
		seen[k] = true
		c := cfg
		c.Ingest.Partition = &k
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("invalid configuration for partition %d:\n%w", k, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func serve(ctx context.Context, cfgs []config.Config, auto bool) error {
	cfg := cfgs[0]
	log := newLogger(cfg.LogLevel)
	_, js, srv, cleanup, err := connectServer(cfg, log)
	if err != nil {
		return err
	}
	defer cleanup()
	if srv != nil {
		log.Info("embedded NATS server ready", "listen", srv.ClientURL(), "data_dir", cfg.NATS.DataDir)
	} else {
		log.Info("connected to NATS", "url", cfg.NATS.URL)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var bal *pipeline.Balancer
	if auto {
		bal = pipeline.NewBalancer(len(cfgs), cfg.Decide.LeaseDuration())
	}
	ps, err := startPipelines(ctx, cfgs, js, log, reg, bal)
	if err != nil {
		return err
	}
	// What scalpel status warns of, on /metrics for an alert (a partition nobody consumes).
	cluster := pipeline.NewClusterCollector(js, cfg.Subjects(), 30*time.Second, log)
	reg.MustRegister(cluster)
	stopAll := func() {
		cluster.Stop()
		for _, p := range ps {
			p.Stop()
		}
		if bal != nil {
			bal.Stop()
		}
	}
	if bal != nil {
		if err := bal.Start(ctx, js); err != nil {
			stopAll()
			return err
		}
	}

	var httpSrv *http.Server
	if cfg.HTTP.Listen != "" {
		rd := audit.Reader{JS: js, Subjects: cfg.Subjects()}
		httpSrv, err = startHTTP(cfg.HTTP.Listen, cfg.HTTP.WebConfigFile, reg, rd, ps, log)
		if err != nil {
			stopAll()
			return err
		}
	}
	log.Info("scalpel serving", "http", cfg.HTTP.Listen, "subject_prefix", cfg.NATS.SubjectPrefix)
	<-ctx.Done()
	log.Info("shutting down: draining consumers")
	if httpSrv != nil {
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		_ = httpSrv.Shutdown(sctx)
		c()
	}
	stopAll()
	log.Info("stopped")
	return nil
}

func startHTTP(addr, webConfig string, reg *prometheus.Registry, rd audit.Reader, ps []*pipeline.Pipeline, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listen %s: %w (pick another with --http-listen, or --http-listen '' to disable)", addr, err)
	}
	srv := serveHTTP(ln, webConfig, httpHandler(reg, rd, ps...), log)
	log.Info("http ready", "addr", ln.Addr().String(), "web_config_file", webConfig)
	if w := clearPasswords(addr, webConfig); w != "" {
		log.Warn(w)
	}
	return srv, nil
}

// clearPasswords warns when the web configuration file at path names basic-auth users but no
// certificate while addr listens beyond the loopback: every request then carries a password in
// clear across the network. "" when there is nothing to warn of (the file was validated already).
func clearPasswords(addr, path string) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var c web.Config // the toolkit's own reading of the file, and its own idea of TLS
	if yaml.Unmarshal(b, &c) != nil || len(c.Users) == 0 || c.TLSConfig.IsEnabled() {
		return ""
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return ""
	}
	return fmt.Sprintf("%s names basic_auth_users but no tls_server_config, and %s listens beyond this host: passwords cross the network in clear; add a certificate (cert_file, key_file) or listen on 127.0.0.1 behind a proxy that speaks TLS", path, addr)
}

// serveHTTP serves h on ln, with TLS and basic authentication when webConfig names a web
// configuration file (exporter-toolkit's, as Prometheus reads it; config.HTTP.WebConfigFile),
// until the returned server is shut down.
func serveHTTP(ln net.Listener, webConfig string, h http.Handler, log *slog.Logger) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	flags := &web.FlagConfig{WebConfigFile: &webConfig} // Serve reads only the file; ln is ours
	go func() {
		if err := web.Serve(ln, srv, flags, log.With("component", "http")); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	return srv
}

// httpHandler serves /healthz, /readyz (which also says whether this process is active or stands
// by, for each partition it consumes) and /metrics.
func httpHandler(reg *prometheus.Registry, rd audit.Reader, ps ...*pipeline.Pipeline) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(api.Prefix, api.Handler(api.Options{Reader: rd, Pipelines: ps, Version: buildInfo().Version}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		for _, p := range ps {
			if !p.Ready() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
		}
		for _, p := range ps {
			var part string
			if k := p.Partition(); len(ps) > 1 && k != nil {
				part = fmt.Sprintf("partition %d ", *k)
			}
			switch ingest, decide := p.Active(); {
			case decide && !ingest:
				fmt.Fprintf(w, "ready: %sactive (decide; other processes consume the telemetry)\n", part)
			case !ingest && !p.Ingests():
				fmt.Fprintf(w, "ready: %sstanding by for the process that holds the decide lease\n", part)
			case ingest && decide:
				fmt.Fprintf(w, "ready: %sactive (ingest, detect and decide)\n", part)
			case ingest:
				fmt.Fprintf(w, "ready: %sactive (ingest and detect; it does not decide)\n", part)
			default:
				fmt.Fprintf(w, "ready: %sstanding by for the process that holds the ingest lease\n", part)
			}
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}
