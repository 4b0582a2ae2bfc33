package openfeature_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	of "github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"

	"github.com/scalpel-dev/scalpel/actuate/natsactuator"
	scalpelof "github.com/scalpel-dev/scalpel/actuate/openfeature"
	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

func TestFlagsFollowScalpelActive(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: schemas.StreamRollbacks, Subjects: []string{"rollback.>"}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketActive, History: 10})
	if err != nil {
		t.Fatal(err)
	}
	act, err := natsactuator.New(js, kv, schemas.Subjects{})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(id, comp, block, action, to string) {
		t.Helper()
		g := schemas.GranularityFine
		if block == "" {
			g = schemas.GranularityMedium
		}
		cmd := schemas.RollbackCommand{ID: schemas.DeriveID("of-test", id), DecisionID: schemas.DeriveID("of-test-d", id), IncidentID: "i",
			Granularity: g, Action: action, Service: "shop", Component: comp, Block: block, FromVersion: "2.0", ToVersion: to,
			Reason: "test", IssuedAt: time.Now().UTC()}
		if err := act.Actuate(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	issue("1", "pricing", "discount", schemas.ActionRollback, "1.0") // before the provider starts

	p, err := scalpelof.New(js, "shop")
	if err != nil {
		t.Fatal(err)
	}
	api := isolated.NewAPI()
	if err := api.SetProviderAndWait(ctx, p); err != nil {
		t.Fatal(err)
	}
	defer api.Shutdown(ctx)
	client := api.NewClient()

	if got, _ := client.StringValue(ctx, "pricing.discount", "2.0", of.EvaluationContext{}); got != "1.0" {
		t.Fatalf("pricing.discount = %q, want the rolled-back 1.0", got)
	}
	d, _ := client.StringValueDetails(ctx, "pricing.tax", "2.0", of.EvaluationContext{})
	if d.Value != "2.0" || d.Reason != of.DefaultReason {
		t.Fatalf("untouched flag: %q (%s), want the default with reason DEFAULT", d.Value, d.Reason)
	}

	issue("2", "catalog", "", schemas.ActionDisable, "2.0")
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if on, _ := client.BooleanValue(ctx, "catalog", true, of.EvaluationContext{}); on {
			return errors.New("catalog still enabled")
		}
		return nil
	})
	if _, err := client.IntValue(ctx, "catalog", 3, of.EvaluationContext{}); err == nil {
		t.Fatal("an int evaluation of a version flag should be a type mismatch")
	}
	obj, _ := client.ObjectValue(ctx, "pricing.discount", nil, of.EvaluationContext{})
	if av, ok := obj.(schemas.ActiveVersion); !ok || av.Action != schemas.ActionRollback {
		t.Fatalf("object value %#v", obj)
	}
}
