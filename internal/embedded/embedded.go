// Package embedded starts the nats-server with JetStream that `scalpel serve` and `scalpel demo` run
// in-process when no --nats-url is given.
package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures the embedded server.
type Options struct {
	// Listen is the client listen address, HOST:PORT. Port 0 (or -1) picks a free port.
	Listen string
	// DataDir holds the JetStream file store (created if missing).
	DataDir string
	// ServerName names the server in logs and monitoring; default "scalpel".
	ServerName string
	// MaxPayload is the largest message the server accepts; default 8 MiB, so that ingest's own
	// size limit, which rejects with a reason, is the one users meet.
	MaxPayload int32
	// Logger receives the server's own log lines at Debug (warnings and errors at their level).
	Logger *slog.Logger
	// ReadyTimeout bounds start-up; default 10s.
	ReadyTimeout time.Duration
}

// ErrNotReady is returned when the server does not accept connections within ReadyTimeout.
var ErrNotReady = errors.New("embedded nats-server not ready for connections")

// Start starts the server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w (want HOST:PORT, e.g. 127.0.0.1:4222)", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < -1 || port > 65535 {
		return nil, fmt.Errorf("nats listen address %q: bad port", o.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if o.DataDir == "" {
		return nil, errors.New("embedded nats-server: a data directory is required (--data-dir)")
	}
	dir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if o.ServerName == "" {
		o.ServerName = "scalpel"
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = 8 << 20
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 10 * time.Second
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       host,
		Port:       port,
		NoSigs:     true, // scalpel handles SIGINT/SIGTERM and drains before shutting the server down
		JetStream:  true,
		StoreDir:   filepath.Join(dir, "jetstream"),
		MaxPayload: o.MaxPayload,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	if o.Logger != nil {
		s.SetLoggerV2(&slogAdapter{l: o.Logger}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(o.ReadyTimeout) {
		s.Shutdown()
		return nil, fmt.Errorf("%w within %v on %s (is the port already in use? pick another with --nats-listen)", ErrNotReady, o.ReadyTimeout, o.Listen)
	}
	return s, nil
}

// slogAdapter forwards nats-server log lines to slog.
type slogAdapter struct{ l *slog.Logger }

func (a *slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any)  {}
