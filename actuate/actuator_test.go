package actuate_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/schemas"
)

var errBoom = errors.New("boom")

func TestClassification(t *testing.T) {
	tests := []struct {
		name          string
		err           error
		wantPermanent bool
		wantMsg       string
	}{
		{"unclassified is retryable", errBoom, false, "boom"},
		{"permanent", actuate.Permanent(errBoom), true, "permanent: boom"},
		{"retryable", actuate.Retryable(errBoom), false, "retryable: boom"},
		{"outermost wins", actuate.Retryable(actuate.Permanent(errBoom)), false, "retryable: permanent: boom"},
		{"wrapped", errors.Join(errors.New("x"), actuate.Permanent(errBoom)), true, "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := actuate.IsPermanent(tt.err); got != tt.wantPermanent {
				t.Errorf("IsPermanent = %v, want %v", got, tt.wantPermanent)
			}
			if !errors.Is(tt.err, errBoom) {
				t.Error("cause lost")
			}
			if !strings.Contains(tt.err.Error(), tt.wantMsg) {
				t.Errorf("Error() = %q, want %q", tt.err, tt.wantMsg)
			}
		})
	}
	if actuate.Permanent(nil) != nil || actuate.Retryable(nil) != nil {
		t.Error("classifying nil must give nil")
	}
}

func TestMulti(t *testing.T) {
	ok := actuate.ActuatorFunc(func(context.Context, schemas.RollbackCommand) error { return nil })
	perm := actuate.ActuatorFunc(func(context.Context, schemas.RollbackCommand) error { return actuate.Permanent(errBoom) })
	retry := actuate.ActuatorFunc(func(context.Context, schemas.RollbackCommand) error { return errors.New("timeout") })
	tests := []struct {
		name          string
		list          []actuate.Actuator
		wantErr       bool
		wantPermanent bool
		wantCalls     int
	}{
		{"all ok", []actuate.Actuator{ok, ok}, false, false, 2},
		{"none", nil, false, false, 0},
		{"one permanent", []actuate.Actuator{perm, ok}, true, true, 2},
		{"permanent and retryable", []actuate.Actuator{perm, retry, ok}, true, false, 3},
		{"retryable only", []actuate.Actuator{ok, retry}, true, false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			var list []actuate.Actuator
			for _, a := range tt.list {
				list = append(list, actuate.ActuatorFunc(func(ctx context.Context, c schemas.RollbackCommand) error {
					calls++
					return a.Actuate(ctx, c)
				}))
			}
			err := actuate.Multi(list...).Actuate(context.Background(), schemas.RollbackCommand{})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && actuate.IsPermanent(err) != tt.wantPermanent {
				t.Errorf("IsPermanent(%v) = %v, want %v", err, actuate.IsPermanent(err), tt.wantPermanent)
			}
			if calls != tt.wantCalls {
				t.Errorf("calls = %d, want %d (every actuator runs even after a failure)", calls, tt.wantCalls)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	issued := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	exp := issued.Add(time.Minute)
	good := schemas.RollbackCommand{
		ID: "c1", DecisionID: "d1", IncidentID: "i1", Granularity: schemas.GranularityMedium,
		Action: schemas.ActionRollback, Service: "checkout", Component: "tax-calc",
		FromVersion: "2.4.0", ToVersion: "2.3.9", Reason: "r", IssuedAt: issued, ExpiresAt: &exp,
	}
	bad := good
	bad.Service = "no.dots"
	tests := []struct {
		name    string
		cmd     schemas.RollbackCommand
		now     time.Time
		wantIs  error
		wantNil bool
	}{
		{"valid", good, issued.Add(30 * time.Second), nil, true},
		{"expired", good, exp, actuate.ErrExpired, false},
		{"invalid", bad, issued, schemas.ErrInvalid, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := actuate.Check(&tt.cmd, tt.now)
			if tt.wantNil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.wantIs) || !actuate.IsPermanent(err) {
				t.Fatalf("err = %v, want permanent %v", err, tt.wantIs)
			}
		})
	}
}
