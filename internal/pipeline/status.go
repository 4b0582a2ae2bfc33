package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/ingest"
	"github.com/scalpel-dev/scalpel/schemas"
)

// ClusterStatus is what the streams and scalpel_state say of the serve processes that share one
// NATS server or cluster: how the telemetry stream is cut, who decides, and for each durable
// consumer of the telemetry who consumes it, how far behind it is and how far its event time has
// come. It is read without taking part (ReadClusterStatus), by any process or the CLI.
type ClusterStatus struct {
	At        time.Time         `json:"at"`
	Telemetry TelemetryStatus   `json:"telemetry"`
	Decide    decide.LeaseState `json:"decide"`
	Consumers []ConsumerStatus  `json:"consumers"`
	// Sharing counts the processes alive that share the partitions out among themselves
	// (serve --partition auto).
	Sharing int `json:"sharing_processes"`
	// Warnings say what needs a person: a partition no process consumes, messages that wait for
	// a consumer nobody runs, no process deciding.
	Warnings []string `json:"warnings"`
}

// TelemetryStatus describes the TELEMETRY stream.
type TelemetryStatus struct {
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	// Partitions is how many partitions the stream is cut into (ingest.partitions; 0: not cut).
	Partitions int `json:"partitions"`
}

// ConsumerStatus describes one durable consumer of the telemetry.
type ConsumerStatus struct {
	Name    string   `json:"name"`
	Filters []string `json:"filters"`
	// Partition is the partition it reads, when its filter is one partition's.
	Partition *int `json:"partition,omitempty"`
	// Lease is its ingest lease: the process that consumes it, and until when.
	Lease         decide.LeaseState `json:"lease"`
	Pending       uint64            `json:"pending"`
	Unacked       int               `json:"unacked"`
	LastDelivered time.Time         `json:"last_delivered,omitzero"`
	// Watermark is its detector's event time as it last shared it, at WatermarkShared.
	Watermark       time.Time `json:"watermark,omitzero"`
	WatermarkShared time.Time `json:"watermark_shared,omitzero"`
}

// ReadClusterStatus reads the status of the processes that use js under subj's prefix.
func ReadClusterStatus(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects) (*ClusterStatus, error) {
	now := time.Now()
	st := &ClusterStatus{At: now.UTC(), Consumers: []ConsumerStatus{}, Warnings: []string{}}
	str, err := js.Stream(ctx, schemas.StreamTelemetry)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s does not exist: start `scalpel serve` once (it creates the topology), or point --server at scalpel's NATS", schemas.StreamTelemetry)
	}
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", schemas.StreamTelemetry, err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", schemas.StreamTelemetry, err)
	}
	st.Telemetry = TelemetryStatus{Messages: info.State.Msgs, Bytes: info.State.Bytes, Partitions: ingest.CutPartitions(info.Config.SubjectTransform)}
	kv, err := js.KeyValue(ctx, schemas.BucketState)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", schemas.BucketState, err)
	}
	if st.Decide, err = decide.ReadLease(ctx, kv, decide.LeaseKey); err != nil {
		return nil, err
	}
	partPrefix := subj.Telemetry("*", "*") + "."
	cons := str.ListConsumers(ctx)
	for ci := range cons.Info() {
		if ci.Config.Durable == "" {
			continue // an ordered consumer of a replay or a CLI: nobody's ingest
		}
		c := ConsumerStatus{Name: ci.Name, Filters: ci.Config.FilterSubjects, Pending: ci.NumPending, Unacked: ci.NumAckPending}
		if f := ci.Config.FilterSubject; f != "" {
			c.Filters = append([]string{f}, c.Filters...)
		}
		for _, f := range c.Filters {
			if k, err := strconv.Atoi(strings.TrimPrefix(f, partPrefix)); err == nil && strings.HasPrefix(f, partPrefix) {
				c.Partition = &k
			}
		}
		if ci.Delivered.Last != nil {
			c.LastDelivered = ci.Delivered.Last.UTC()
		}
		if c.Lease, err = decide.ReadLease(ctx, kv, IngestLeaseKey(ci.Name)); err != nil {
			return nil, err
		}
		if e, err := kv.Get(ctx, WatermarkKey(ci.Name)); err == nil {
			if wm, err := time.Parse(time.RFC3339Nano, string(e.Value())); err == nil {
				c.Watermark, c.WatermarkShared = wm, e.Created().UTC()
			}
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("read %s: %w", WatermarkKey(ci.Name), err)
		}
		st.Consumers = append(st.Consumers, c)
	}
	if err := cons.Err(); err != nil {
		return nil, fmt.Errorf("list consumers of %s: %w", schemas.StreamTelemetry, err)
	}
	slices.SortFunc(st.Consumers, func(a, b ConsumerStatus) int { return strings.Compare(a.Name, b.Name) })
	if st.Sharing, err = countMembers(ctx, kv, now); err != nil {
		return nil, err
	}
	st.Warnings = warnings(st, partPrefix, now)
	return st, nil
}

// warnings says what in st needs a person.
func warnings(st *ClusterStatus, partPrefix string, now time.Time) []string {
	out := []string{}
	if !st.Decide.HeldAt(now) {
		out = append(out, "no process decides: start scalpel serve with role all or decide (anomalies wait in ANOMALIES meanwhile)")
	}
	for k := range st.Telemetry.Partitions {
		part := partPrefix + strconv.Itoa(k)
		if !consumed(st, part) {
			out = append(out, fmt.Sprintf("partition %d has no consumer: no process was given --partition %d (or auto), and its services' telemetry is not read", k, k))
		}
	}
	for _, c := range st.Consumers {
		switch {
		case !c.Lease.HeldAt(now) && c.Pending+uint64(c.Unacked) > 0:
			out = append(out, fmt.Sprintf("%s: no process consumes it, and %d messages wait: start the process that reads it, or remove it if none will (nats consumer rm %s %s)",
				c.Name, c.Pending+uint64(c.Unacked), schemas.StreamTelemetry, c.Name))
		case c.Lease.HeldAt(now) && !c.WatermarkShared.IsZero() && now.Sub(c.WatermarkShared) > WatermarkStale:
			out = append(out, fmt.Sprintf("%s: held by %s, but its event time was last shared %s ago: the process may be stalled",
				c.Name, c.Lease.Holder, now.Sub(c.WatermarkShared).Round(time.Second)))
		}
	}
	return out
}

// ClusterCollector exports, on a process's /metrics, what ReadClusterStatus warns of, so that an
// alert sees it: the partitions no consumer reads, and the messages that wait on consumers no
// process holds. It reads the status every interval on a goroutine of its own, not when scraped.
type ClusterCollector struct {
	unconsumed, waiting, deciding prometheus.Gauge
	stop                          func()
}

// NewClusterCollector reads the status of the processes on js every interval until Stop.
func NewClusterCollector(js jetstream.JetStream, subj schemas.Subjects, interval time.Duration, log *slog.Logger) *ClusterCollector {
	c := &ClusterCollector{
		unconsumed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scalpel_cluster_partitions_unconsumed",
			Help: "Partitions of the telemetry stream that no consumer reads: no process was given them, and their services' telemetry is not read (scalpel status). Alert when above 0."}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scalpel_cluster_unconsumed_messages",
			Help: "Telemetry messages that wait on durable consumers whose lease no process holds (scalpel status)."}),
		deciding: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scalpel_cluster_deciding",
			Help: "1 while some process holds the decide lease, 0 while none does (scalpel status)."}),
	}
	read := func() {
		// Bounded so that stopping, which waits for a read in progress, does not wait long.
		ctx, cancel := context.WithTimeout(context.Background(), min(interval, 5*time.Second))
		defer cancel()
		st, err := ReadClusterStatus(ctx, js, subj)
		if err != nil {
			log.Debug("cluster status: cannot read it", "err", err)
			return
		}
		now := time.Now()
		partPrefix := subj.Telemetry("*", "*") + "."
		n := 0
		for k := range st.Telemetry.Partitions {
			if !consumed(st, partPrefix+strconv.Itoa(k)) {
				n++
			}
		}
		var waiting uint64
		for _, cs := range st.Consumers {
			if !cs.Lease.HeldAt(now) {
				waiting += cs.Pending + uint64(cs.Unacked)
			}
		}
		c.unconsumed.Set(float64(n))
		c.waiting.Set(float64(waiting))
		if st.Decide.HeldAt(now) {
			c.deciding.Set(1)
		} else {
			c.deciding.Set(0)
		}
	}
	read()
	c.stop = every(interval, read)
	return c
}

// Stop ends the reads.
func (c *ClusterCollector) Stop() { c.stop() }

// Describe implements prometheus.Collector.
func (c *ClusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range []prometheus.Gauge{c.unconsumed, c.waiting, c.deciding} {
		g.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (c *ClusterCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range []prometheus.Gauge{c.unconsumed, c.waiting, c.deciding} {
		g.Collect(ch)
	}
}

// consumed reports whether some consumer in st reads every subject of part.
func consumed(st *ClusterStatus, part string) bool {
	return slices.ContainsFunc(st.Consumers, func(c ConsumerStatus) bool {
		return slices.ContainsFunc(c.Filters, func(f string) bool { return ingest.SubjectCovers(f, part) })
	})
}
