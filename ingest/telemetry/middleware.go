package telemetry

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// versioned is what a versioned handler (the deployer's Handler) offers: the version answering now.
type versioned interface{ Active() string }

// Middleware records every request to next as an observation of component (the endpoint): its
// latency and, for a failure, its category — a request whose context hit its deadline, or a 504 or
// 408, is a timeout; a panic or another 5xx an exception; another 4xx invalid_input. A panic is
// recorded and then re-raised, so net/http handles it as it would without the middleware.
//
// The version is next's Active() when next is versioned (a deployer Handler), else the
// publisher's version source, else its version.
func (p *Publisher) Middleware(component string, next http.Handler) http.Handler {
	vh, isVersioned := next.(versioned)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var version string
		if isVersioned {
			version = vh.Active()
		}
		rw := recorderPool.Get().(*statusRecorder)
		rw.ResponseWriter, rw.status = w, 0
		start := time.Now()
		defer func() {
			o := Observation{Component: component, Version: version, Latency: time.Since(start)}
			rec := recover()
			switch {
			case rec != nil && rec != http.ErrAbortHandler:
				o.Error = schemas.ErrException
			case errors.Is(r.Context().Err(), context.DeadlineExceeded):
				o.Error = schemas.ErrTimeout
			default:
				o.Error = StatusCategory(rw.status)
			}
			rw.ResponseWriter = nil
			recorderPool.Put(rw)
			p.Record(o)
			if rec != nil {
				panic(rec)
			}
		}()
		next.ServeHTTP(rw, r)
	})
}

// StatusCategory maps an HTTP status to an error category ("" for success).
func StatusCategory(status int) string {
	switch {
	case status == http.StatusGatewayTimeout || status == http.StatusRequestTimeout:
		return schemas.ErrTimeout
	case status >= 500:
		return schemas.ErrException
	case status >= 400:
		return schemas.ErrInvalidInput
	}
	return ""
}

var recorderPool = sync.Pool{New: func() any { return new(statusRecorder) }}

// statusRecorder remembers the status a handler wrote. Unwrap lets http.ResponseController reach
// the real writer's Flush, Hijack and deadlines.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush passes through, for handlers that stream.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack passes through, for handlers that upgrade the connection.
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(s.ResponseWriter).Hijack()
}
