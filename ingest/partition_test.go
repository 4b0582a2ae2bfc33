package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/internal/natstest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// TestPartitionIsTheServers: the stream cut into partitions stores each service's telemetry in
// the partition Partition computes, for every prefix, so the decoder's check and the
// server's transform agree.
func TestPartitionIsTheServers(t *testing.T) {
	_, _, js := natstest.Connect(t)
	ctx := context.Background()
	for _, subj := range []schemas.Subjects{{}, {Prefix: "acme.prod"}} {
		topo := DefaultTopologyConfig()
		topo.TelemetryPartitions = 7
		if err := EnsureTopology(ctx, js, subj, topo); err != nil {
			t.Fatal(err)
		}
		str, err := js.Stream(ctx, schemas.StreamTelemetry)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 60 {
			svc := fmt.Sprintf("svc-%d", i)
			ack, err := js.Publish(ctx, subj.Telemetry(svc, "c"), []byte("{}"))
			if err != nil {
				t.Fatal(err)
			}
			m, err := str.GetMsg(ctx, ack.Sequence)
			if err != nil {
				t.Fatal(err)
			}
			if want := subj.Telemetry(svc, "c") + "." + strconv.Itoa(Partition(svc, 7)); m.Subject != want {
				t.Fatalf("%s stored as %s, Partition says %s", svc, m.Subject, want)
			}
		}
		if err := js.DeleteStream(ctx, schemas.StreamTelemetry); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDecodePartitionedSubjects: a cut stream's subjects carry the partition as a fourth token;
// the decoder reads them, and refuses one whose partition is not the service's (a producer that
// published to a partition's subject itself), unless it does not know how the stream is cut.
// Clock ticks name their own partition.
func TestDecodePartitionedSubjects(t *testing.T) {
	body := `{"ts":"2026-11-26T10:00:00Z","service":"checkout","component":"tax-calc","version":"1"}`
	tick := `{"ts":"2026-11-26T10:00:00Z","service":"_scalpel","component":"scalpel-ingest-p3","version":"1"}`
	p := strconv.Itoa(Partition("checkout", 4))
	wrong := strconv.Itoa((Partition("checkout", 4) + 1) % 4)
	for _, tt := range []struct {
		name, subject, body string
		parts               int
		want                string // in the rejection; "" for none
	}{
		{"not cut", "telemetry.checkout.tax-calc", body, 0, ""},
		{"stored before the stream was cut", "telemetry.checkout.tax-calc", body, 4, ""},
		{"its partition", "telemetry.checkout.tax-calc." + p, body, 4, ""},
		{"another partition", "telemetry.checkout.tax-calc." + wrong, body, 4, "is partition " + wrong + ", but service checkout is stored in partition " + p + " of 4"},
		{"a partition, the cut unknown", "telemetry.checkout.tax-calc." + wrong, body, 0, ""},
		{"not a number", "telemetry.checkout.tax-calc.x1", body, 4, "is not telemetry.<service>.<component>"},
		{"a leading zero", "telemetry.checkout.tax-calc.0" + p, body, 4, "is not telemetry.<service>.<component>"},
		{"five tokens", "telemetry.checkout.tax-calc." + p + ".1", body, 4, "is not telemetry.<service>.<component>"},
		{"a clock tick of its partition", "telemetry._scalpel.scalpel-ingest-p3.3", tick, 4, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(DecoderConfig{Partitions: tt.parts, MaxClockAhead: -1})
			evs, err := d.Decode(tt.subject, []byte(tt.body), nil)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tt.want == "" && len(evs) != 1:
				t.Fatalf("%d events", len(evs))
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
			var re *RejectError
			if tt.want != "" && (!errors.As(err, &re) || re.Class != ClassSubject) {
				t.Errorf("error %v is not a %s rejection", err, ClassSubject)
			}
		})
	}
}

// TestPartitionOf: the partition a cut stream stored a subject under, which a replay of every
// partition routes by; none for a subject of three tokens or one that is not telemetry.
func TestPartitionOf(t *testing.T) {
	for _, tt := range []struct {
		prefix, subject string
		want            int
		ok              bool
	}{
		{"", "telemetry.checkout.tax-calc.3", 3, true},
		{"", "telemetry._scalpel.scalpel-ingest-p12.12", 12, true},
		{"acme", "acme.telemetry.checkout.tax-calc.0", 0, true},
		{"", "telemetry.checkout.tax-calc", 0, false},
		{"", "telemetry.checkout.tax-calc.3.1", 0, false},
		{"", "telemetry.checkout.tax-calc.x", 0, false},
		{"acme", "telemetry.checkout.tax-calc.3", 0, false},
		{"", "deploy.checkout", 0, false},
	} {
		d := NewDecoder(DecoderConfig{Subjects: schemas.Subjects{Prefix: tt.prefix}})
		if k, ok := d.PartitionOf(tt.subject); k != tt.want || ok != tt.ok {
			t.Errorf("PartitionOf(%q) with prefix %q = %d, %v; want %d, %v", tt.subject, tt.prefix, k, ok, tt.want, tt.ok)
		}
	}
}

// TestRepartitionWaitsForConsumers: cutting the stream anew while a consumer has messages it has
// not acknowledged would leave them under subjects the new partitions' consumers do not read, so
// it is refused with what to do; once everything is acknowledged it goes through. A process
// that does not say how the stream is cut leaves it as it is.
func TestRepartitionWaitsForConsumers(t *testing.T) {
	js := connectWithTopology(t)
	ctx := context.Background()
	for i := range 5 {
		if _, err := js.Publish(ctx, "telemetry.checkout.c", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamTelemetry, jetstream.ConsumerConfig{Durable: "scalpel-ingest", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	cut := DefaultTopologyConfig()
	cut.TelemetryPartitions = 4
	err = EnsureTopology(ctx, js, schemas.Subjects{}, cut)
	if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "scalpel-ingest has 5 messages it has not acknowledged") {
		t.Fatalf("EnsureTopology = %v, want a refusal naming the consumer", err)
	}
	batch, err := cons.FetchNoWait(10)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := EnsureTopology(ctx, js, schemas.Subjects{}, cut); err != nil {
		t.Fatalf("everything acknowledged: %v", err)
	}
	if err := EnsureTopology(ctx, js, schemas.Subjects{}, cut); err != nil {
		t.Fatalf("the same cut again: %v", err)
	}
	// A process without ingest.partitions leaves the cut alone.
	if err := EnsureTopology(ctx, js, schemas.Subjects{}, DefaultTopologyConfig()); err != nil {
		t.Fatal(err)
	}
	str, err := js.Stream(ctx, schemas.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	if got := str.CachedInfo().Config.SubjectTransform; !sameTransform(got, partitionTransform(schemas.Subjects{}, 4)) {
		t.Errorf("after a process without partitions started, the stream is cut as %s", describeCut(got))
	}
}

// TestRepartitionFindsUnreadPartitions: a partition of the old cut that no consumer reads holds
// messages nobody acknowledged, and a consumer nobody pulls from may be one no process uses
// anymore: the refusal says which, and what to do. Purged, the stream is cut anew.
func TestRepartitionFindsUnreadPartitions(t *testing.T) {
	js := connectWithTopology(t)
	ctx := context.Background()
	four := DefaultTopologyConfig()
	four.TelemetryPartitions = 4
	if err := EnsureTopology(ctx, js, schemas.Subjects{}, four); err != nil {
		t.Fatal(err)
	}
	mine := Partition("checkout", 4)
	for k := range 4 { // every partition has its consumer but checkout's
		if k == mine {
			continue
		}
		if _, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamTelemetry, jetstream.ConsumerConfig{Durable: "scalpel-ingest-p" + strconv.Itoa(k),
			FilterSubject: "telemetry.*.*." + strconv.Itoa(k), AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "telemetry.checkout.c", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	two := DefaultTopologyConfig()
	two.TelemetryPartitions = 2
	part := "telemetry.*.*." + strconv.Itoa(mine)
	err := EnsureTopology(ctx, js, schemas.Subjects{}, two)
	for _, want := range []string{fmt.Sprintf("partition %d holds 3 messages that no consumer reads", mine), "nats stream purge TELEMETRY --subject '" + part + "'"} {
		if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
			t.Fatalf("EnsureTopology = %v, want a refusal saying %q", err, want)
		}
	}

	// A consumer of checkout's partition that nobody ever pulled from.
	if _, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamTelemetry, jetstream.ConsumerConfig{Durable: "scalpel-ingest-p" + strconv.Itoa(mine),
		FilterSubject: part, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	err = EnsureTopology(ctx, js, schemas.Subjects{}, two)
	if want := fmt.Sprintf("No process has read from scalpel-ingest-p%d ever: if none uses it anymore, remove it (nats consumer rm TELEMETRY scalpel-ingest-p%d)", mine, mine); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("EnsureTopology = %v, want a refusal saying %q", err, want)
	}
	if err := js.DeleteConsumer(ctx, schemas.StreamTelemetry, "scalpel-ingest-p"+strconv.Itoa(mine)); err != nil {
		t.Fatal(err)
	}
	str, err := js.Stream(ctx, schemas.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	if err := str.Purge(ctx, jetstream.WithPurgeSubject(part)); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopology(ctx, js, schemas.Subjects{}, two); err != nil {
		t.Fatalf("purged: %v", err)
	}
}

func TestPartitionConfig(t *testing.T) {
	two, four := 2, 4
	for _, tt := range []struct {
		name string
		c    Config
		want string // in the error; "" for none
	}{
		{"not cut", Config{}, ""},
		{"cut, all read", Config{Partitions: 4}, ""},
		{"one partition", Config{Partitions: 4, Partition: &two}, ""},
		{"a partition of an uncut stream", Config{Partition: &two}, "partitions is 0"},
		{"beyond the last", Config{Partitions: 4, Partition: &four}, "partition must be 0 to 3"},
		{"too many", Config{Partitions: MaxPartitions + 1}, "partitions must be 0"},
		{"a partition and a filter", Config{Partitions: 4, Partition: &two, FilterSubject: "telemetry.checkout.>"}, "set one of them"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate()
			if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
	c := Config{Durable: DefaultConfig().Durable, Partitions: 4, Partition: &two}
	durable, filter := c.Consumes(schemas.Subjects{Prefix: "acme"})
	if durable != "scalpel-ingest-p2" || filter != "acme.telemetry.*.*.2" {
		t.Errorf("partition 2 consumes %s on %s", durable, filter)
	}
	if tick, _ := c.TickSubject(schemas.Subjects{}); tick != "telemetry._scalpel.scalpel-ingest-p2.2" {
		t.Errorf("partition 2 ticks on %s", tick)
	}
	if f := c.Filters(schemas.Subjects{}); len(f) != 1 {
		t.Errorf("partition 2 reads %q: its filter covers its ticks", f)
	}
}

// FuzzDecodeSubject: whatever the subject, the decoder never panics, and what it accepts is a
// telemetry subject of the body's service and component, with at most the service's partition
// as a fourth token when it knows how the stream is cut.
func FuzzDecodeSubject(f *testing.F) {
	for _, s := range []string{"telemetry.checkout.tax-calc", "telemetry.checkout.tax-calc.3", "telemetry.checkout.tax-calc.03",
		"telemetry.checkout.tax-calc.3.1", "telemetry.checkout..3", "telemetry..tax-calc", "telemetry.checkout", "telemetry.",
		"acme.telemetry.checkout.tax-calc.1", "telemetry._scalpel.clock.2", "telemetry.checkout.tax-calc.99999"} {
		f.Add(s, uint8(4))
		f.Add(s, uint8(0))
	}
	body := []byte(`{"ts":"2026-11-26T10:00:00Z","service":"checkout","component":"tax-calc","version":"1"}`)
	f.Fuzz(func(t *testing.T, subject string, parts uint8) {
		if subject == "" {
			return // no subject: nothing to check it against (Decode)
		}
		n := int(parts) % 9
		d := NewDecoder(DecoderConfig{Partitions: n, MaxClockAhead: -1})
		k, cut := d.PartitionOf(subject) // what a replay of every partition routes by
		evs, err := d.Decode(subject, body, nil)
		if err == nil && cut != (strings.Count(subject, ".") == 3) {
			t.Fatalf("subject %q accepted: PartitionOf says %d, %v", subject, k, cut)
		}
		if err == nil && cut && n > 0 && k != Partition("checkout", n) {
			t.Fatalf("subject %q accepted with %d partitions: PartitionOf says %d, checkout is in %d", subject, n, k, Partition("checkout", n))
		}
		if err != nil {
			var re *RejectError
			if !errors.As(err, &re) || re.Class != ClassSubject {
				t.Fatalf("subject %q: %v is not a subject rejection", subject, err)
			}
			return
		}
		rest, ok := strings.CutPrefix(subject, "telemetry.checkout.tax-calc")
		if !ok || len(evs) != 1 {
			t.Fatalf("subject %q accepted for checkout/tax-calc", subject)
		}
		if rest != "" && n > 0 && rest != "."+strconv.Itoa(Partition("checkout", n)) {
			t.Fatalf("subject %q accepted with %d partitions: checkout is in %d", subject, n, Partition("checkout", n))
		}
	})
}

// TestCheckFilter: a filter that can match no subject as the stream stores them is an error
// that says what to write instead.
func TestCheckFilter(t *testing.T) {
	for _, tt := range []struct {
		filter string
		parts  int
		want   string // in the error; "" for none
	}{
		{"", 4, ""},
		{"telemetry.checkout.>", 4, ""},
		{"telemetry.checkout.*", 0, ""},
		{"telemetry.checkout.*", 4, "end it with .>"},
		{"telemetry.*.*.2", 4, ""},
		{"telemetry.*.*.2", 0, "matches no telemetry, stored as telemetry.<svc>.<comp>"},
		{"telemetry.>", 0, ""},
	} {
		err := Config{FilterSubject: tt.filter, Partitions: tt.parts}.CheckFilter(schemas.Subjects{})
		if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s with %d partitions: %v, want %q", tt.filter, tt.parts, err, tt.want)
		}
	}
}
