package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/internal/natstest"
)

// prefetchRecords is a mix of good telemetry, NDJSON batches, malformed bodies and a deploy, long
// enough to span several prefetch batches.
func prefetchRecords(n int) []Record {
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	var recs []Record
	for i := range n {
		ts := t0.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339Nano)
		ev := fmt.Sprintf(`{"id":"e%d","ts":%q,"service":"shop","component":"cart","version":"1.0.0","latency_ms":%d}`, i, ts, 5+i%17)
		switch {
		case i%97 == 0:
			raw := ev + "\n" + ev
			recs = append(recs, Record{Kind: KindTelemetry, Subject: "telemetry.shop.cart", Raw: &raw})
		case i%89 == 0:
			recs = append(recs, Record{Kind: KindTelemetry, Subject: "telemetry.shop.cart", Data: []byte(`{"id":"x","ts":"never"}`)})
		case i%601 == 0:
			recs = append(recs, Record{Kind: KindDeploy, Subject: "deploys.shop", Data: []byte(`{}`)})
		default:
			recs = append(recs, Record{Kind: KindTelemetry, Subject: "telemetry.shop.cart", Data: []byte(ev)})
		}
	}
	return recs
}

// TestPrefetchDecodesAsInline checks that telemetry decoded ahead on the prefetch goroutine is
// what decoding in the run would give, record by record and in order, errors included.
func TestPrefetchDecodesAsInline(t *testing.T) {
	recs := prefetchRecords(3 * prefetchBatch)
	cfg := ingest.DecoderConfig{}
	p := newPrefetch(context.Background(), NewSliceSource(recs), ingest.NewDecoder(cfg))
	defer p.Close()
	inline := ingest.NewDecoder(cfg)
	for i := range recs {
		got, err := p.Next(context.Background())
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if got.Kind != recs[i].Kind || got.Subject != recs[i].Subject {
			t.Fatalf("record %d out of order: %s %s", i, got.Kind, got.Subject)
		}
		if got.Kind != KindTelemetry {
			if got.pre.events != nil || got.pre.err != nil {
				t.Fatalf("record %d (%s) was decoded as telemetry", i, got.Kind)
			}
			continue
		}
		want, wantErr := inline.Decode(recs[i].Subject, recs[i].Body(), nil)
		if (wantErr == nil) != (got.pre.err == nil) || wantErr != nil && wantErr.Error() != got.pre.err.Error() {
			t.Fatalf("record %d: error %v, inline %v", i, got.pre.err, wantErr)
		}
		if len(want) == 0 {
			want = nil
		}
		gotEvents := got.pre.events
		if len(gotEvents) == 0 {
			gotEvents = nil
		}
		if !reflect.DeepEqual(gotEvents, want) {
			t.Fatalf("record %d: events %+v, inline %+v", i, gotEvents, want)
		}
	}
	if _, err := p.Next(context.Background()); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last record: %v, want EOF", err)
	}
}

// TestPrefetchCloseEarly stops a prefetch in the middle of a long source (Ctrl-C on a replay):
// Close returns and neither the reader nor the decoder goroutine is left behind.
func TestPrefetchCloseEarly(t *testing.T) {
	before := runtime.NumGoroutine()
	recs := prefetchRecords(20 * prefetchBatch)
	ctx, cancel := context.WithCancel(context.Background())
	p := newPrefetch(ctx, NewSliceSource(recs), ingest.NewDecoder(ingest.DecoderConfig{}))
	for range prefetchBatch + 7 {
		if _, err := p.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	p.Close()
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines, %d before the prefetch", n, before)
		}
		return nil
	})
}
