package ingest

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/schemas"
)

// MaxPartitions bounds Config.Partitions.
const MaxPartitions = 1024

// Partition is the partition of the telemetry stream that service's telemetry is stored in when
// the stream is cut into n (Config.Partitions): the server's subject-mapping partition function,
// {{partition(n,1)}} over the service token, which is FNV-1a (32 bits) of the token, mod n.
// TestPartitionIsTheServers publishes through the server's transform and compares.
func Partition(service string, n int) int {
	if n <= 0 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(service))
	return int(h.Sum32() % uint32(n))
}

// CheckFilter reports a FilterSubject that can match no telemetry subject as the stream stores
// them under subj: telemetry.<svc>.<comp>, or with Partitions telemetry.<svc>.<comp>.<p>. A
// filter of three tokens such as telemetry.checkout.* reads nothing once the stream is cut, and
// the detector would go quiet without a word.
func (c Config) CheckFilter(subj schemas.Subjects) error {
	if c.FilterSubject == "" {
		return nil
	}
	stored := subj.Telemetry("s", "c")
	if c.Partitions > 0 {
		stored += ".0"
	}
	if !shapeMatches(c.FilterSubject, strings.Count(stored, ".")+1) {
		if c.Partitions > 0 {
			return fmt.Errorf("%w: ingest: filter_subject %s matches no telemetry of a stream cut into partitions, stored as %s<svc>.<comp>.<p>: end it with .> (telemetry.checkout.>), or set partition instead",
				ErrInvalidConfig, c.FilterSubject, strings.TrimSuffix(subj.TelemetryAll(), ">"))
		}
		return fmt.Errorf("%w: ingest: filter_subject %s matches no telemetry, stored as %s<svc>.<comp>", ErrInvalidConfig, c.FilterSubject, strings.TrimSuffix(subj.TelemetryAll(), ">"))
	}
	return nil
}

// shapeMatches reports whether filter can match a subject of n tokens.
func shapeMatches(filter string, n int) bool {
	toks := strings.Split(filter, ".")
	for i, t := range toks {
		if t == ">" {
			return n > i
		}
	}
	return len(toks) == n
}

// partitionTransform is the telemetry stream's subject transform for n partitions (nil for none):
// telemetry.<svc>.<comp> is stored as telemetry.<svc>.<comp>.<Partition(svc, n)>. Subjects of
// other shapes are stored as they are, which is how a partition's clock ticks (four tokens
// already, see Config.TickSubject) stay in it.
func partitionTransform(subj schemas.Subjects, n int) *jetstream.SubjectTransformConfig {
	if n <= 0 {
		return nil
	}
	return &jetstream.SubjectTransformConfig{
		Source:      subj.Telemetry("*", "*"),
		Destination: subj.Telemetry("{{wildcard(1)}}", "{{wildcard(2)}}") + ".{{partition(" + strconv.Itoa(n) + ",1)}}",
	}
}

// checkRepartition leaves a cut telemetry stream as it is when sc does not cut it (a process
// started without ingest.partitions, a one-off serve pointed at the cluster, must not undo the
// cut under every partition's consumers, which would then read nothing), and refuses to change
// how it is cut while a consumer of it has messages it has not acknowledged: those stay under
// the subjects they were stored with, which the consumers of the new partitions do not read (and
// a consumer of one partition would read another's old ones). Once every consumer has caught
// up, the change loses nothing: new messages are stored under the new subjects, and a replay
// reads both.
func checkRepartition(ctx context.Context, js jetstream.JetStream, sc *jetstream.StreamConfig) error {
	if sc.Name != schemas.StreamTelemetry {
		return nil
	}
	str, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read stream %s: %w", sc.Name, err)
	}
	old := str.CachedInfo().Config.SubjectTransform
	if sc.SubjectTransform == nil {
		sc.SubjectTransform = old
	}
	if sameTransform(old, sc.SubjectTransform) {
		return nil
	}
	var filters []string
	names := str.ListConsumers(ctx)
	for info := range names.Info() {
		filters = append(filters, info.Config.FilterSubject)
		filters = append(filters, info.Config.FilterSubjects...)
		if info.Config.FilterSubject == "" && len(info.Config.FilterSubjects) == 0 {
			filters = append(filters, ">")
		}
		if info.NumPending > 0 || info.NumAckPending > 0 {
			return fmt.Errorf("%w: ingest.partitions changes how stream %s is cut (%s to %s), but its consumer %s has %d messages it has not acknowledged, which would stay under the old subjects: "+
				"stop the producers, let scalpel serve with the old setting acknowledge them, then start it with the new one%s", ErrInvalidConfig,
				sc.Name, describeCut(old), describeCut(sc.SubjectTransform), info.Name, info.NumPending+uint64(info.NumAckPending), abandoned(info, sc.Name))
		}
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("list consumers of %s: %w", sc.Name, err)
	}
	// A partition of the old cut that no consumer reads (no process was ever given it) holds
	// messages nobody acknowledged, which no consumer above counts.
	for k := range CutPartitions(old) {
		part := old.Source + "." + strconv.Itoa(k)
		if slices.ContainsFunc(filters, func(f string) bool { return SubjectCovers(f, part) }) {
			continue
		}
		info, err := str.Info(ctx, jetstream.WithSubjectFilter(part))
		if err != nil {
			return fmt.Errorf("read stream %s: %w", sc.Name, err)
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		if n > 0 {
			return fmt.Errorf("%w: ingest.partitions changes how stream %s is cut (%s to %s), but its partition %d holds %d messages that no consumer reads (no process was given --partition %d), which would stay under the old subjects: "+
				"run scalpel serve --partition %d with the old setting until it has caught up, then start with the new one; or, if those messages are not wanted, purge them (nats stream purge %s --subject '%s')", ErrInvalidConfig,
				sc.Name, describeCut(old), describeCut(sc.SubjectTransform), k, n, k, k, sc.Name, part)
		}
	}
	return nil
}

// CutPartitions is how many partitions the telemetry stream's transform t cuts it into (0 when
// it does not: nil, or not a transform ingest.partitions made).
func CutPartitions(t *jetstream.SubjectTransformConfig) int {
	if t == nil {
		return 0
	}
	_, rest, ok := strings.Cut(t.Destination, "{{partition(")
	if !ok {
		return 0
	}
	n, _, _ := strings.Cut(rest, ",")
	k, err := strconv.Atoi(n)
	if err != nil || k < 0 || k > MaxPartitions {
		return 0
	}
	return k
}

// abandoned says, of a consumer that no client is pulling from and that delivered nothing for an
// hour, that it may be one no process uses anymore (one of a partition the stream is no longer
// cut into, or of the whole stream before it was cut), and how to remove it.
func abandoned(info *jetstream.ConsumerInfo, stream string) string {
	if info.NumWaiting > 0 || info.Delivered.Last != nil && time.Since(*info.Delivered.Last) < time.Hour {
		return ""
	}
	since := "ever"
	if info.Delivered.Last != nil {
		since = "since " + info.Delivered.Last.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf(". No process has read from %s %s: if none uses it anymore, remove it (nats consumer rm %s %s)", info.Name, since, stream, info.Name)
}

func sameTransform(a, b *jetstream.SubjectTransformConfig) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func describeCut(t *jetstream.SubjectTransformConfig) string {
	if t == nil {
		return "not cut"
	}
	return t.Destination
}
