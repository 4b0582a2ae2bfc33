package telemetry

import (
	"context"
	"errors"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// BlockRef names a code block and reports the version active now. The deployer's Block satisfies
// it, so Observe(block, ...) reports the version the block really ran, rollbacks included.
type BlockRef interface {
	Component() string
	Block() string
	Active() string
}

// Observe runs fn as an execution of block b and records its latency and outcome: nil is a
// success; an error is categorised by Categorize. A panic is recorded as an exception and
// re-raised. It returns fn's error.
func (p *Publisher) Observe(b BlockRef, fn func() error) (err error) {
	o := Observation{Component: b.Component(), Block: b.Block(), Version: b.Active()}
	start := time.Now()
	defer func() {
		o.Latency = time.Since(start)
		if rec := recover(); rec != nil {
			o.Error = schemas.ErrException
			p.Record(o)
			panic(rec)
		}
		o.Error = Categorize(err)
		p.Record(o)
	}()
	return fn()
}

// categorized is an error that names its own category.
type categorized interface{ TelemetryCategory() string }

type categoryError struct {
	category string
	err      error
}

func (e *categoryError) Error() string             { return e.err.Error() }
func (e *categoryError) Unwrap() error             { return e.err }
func (e *categoryError) TelemetryCategory() string { return e.category }

// InvalidInput marks err as the caller's fault (category invalid_input), which does not count as
// a regression of the code.
func InvalidInput(err error) error {
	if err == nil {
		return nil
	}
	return &categoryError{category: schemas.ErrInvalidInput, err: err}
}

// Categorize maps an error to a category: "" for nil; timeout for a deadline; the category an
// error names itself (InvalidInput, or any error with a TelemetryCategory() string method);
// exception for anything else.
func Categorize(err error) string {
	if err == nil {
		return ""
	}
	var c categorized
	if errors.As(err, &c) {
		return c.TelemetryCategory()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return schemas.ErrTimeout
	}
	return schemas.ErrException
}
