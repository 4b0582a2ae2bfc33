package replay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
)

// Source yields the records of a replay in order. Every record that is not telemetry (manifests,
// deploys, and the recorded anomalies, decisions, acks, approvals and actuation failures) comes
// before the first telemetry record;
// telemetry comes in stream order, the order live ingest saw it. Next returns io.EOF after the last
// record. A record's Data may be reused after the next call to Next.
type Source interface {
	Next(ctx context.Context) (Record, error)
	// Progress is the fraction of the source read so far, in [0, 1], or -1 when unknown.
	Progress() float64
	Close() error
}

// SliceSource serves records from memory (tests, small bundles).
type SliceSource struct {
	recs []Record
	i    int
}

// NewSliceSource returns a Source over recs.
func NewSliceSource(recs []Record) *SliceSource { return &SliceSource{recs: recs} }

// Next implements Source.
func (s *SliceSource) Next(ctx context.Context) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	if s.i >= len(s.recs) {
		return Record{}, io.EOF
	}
	s.i++
	return s.recs[s.i-1], nil
}

// Progress implements Source.
func (s *SliceSource) Progress() float64 {
	if len(s.recs) == 0 {
		return 1
	}
	return float64(s.i) / float64(len(s.recs))
}

// Close implements Source.
func (s *SliceSource) Close() error { return nil }

// FileSource reads an incident bundle written by Export.
type FileSource struct {
	r    io.Reader
	sc   *bufio.Scanner
	size int64
	read int64
	line int
}

// maxLine bounds one bundle line: a 1 MiB message escaped as a string, or a detector checkpoint in
// base64 (about 5 KB per series), plus its envelope. The scanner grows to it only as lines need.
const maxLine = 256 << 20

// NewFileSource reads NDJSON records from r. size is the total number of bytes (for progress), or
// 0 when unknown.
func NewFileSource(r io.Reader, size int64) *FileSource {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256<<10), maxLine)
	return &FileSource{r: r, sc: sc, size: size}
}

// Next implements Source.
func (s *FileSource) Next(ctx context.Context) (Record, error) {
	for {
		if err := ctx.Err(); err != nil {
			return Record{}, err
		}
		if !s.sc.Scan() {
			if err := s.sc.Err(); err != nil {
				return Record{}, fmt.Errorf("bundle line %d: %w", s.line+1, err)
			}
			return Record{}, io.EOF
		}
		s.line++
		b := s.sc.Bytes()
		s.read += int64(len(b)) + 1
		if len(b) == 0 || (len(b) == 1 && b[0] == '\r') {
			continue
		}
		r, err := ParseRecord(b)
		if err != nil {
			return Record{}, fmt.Errorf("bundle line %d: %w", s.line, err)
		}
		return r, nil
	}
}

// Progress implements Source.
func (s *FileSource) Progress() float64 {
	if s.size <= 0 {
		return -1
	}
	return min(1, float64(s.read)/float64(s.size))
}

// Close closes the reader when it is an io.Closer.
func (s *FileSource) Close() error {
	if c, ok := s.r.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Export copies every record of src to w as NDJSON, an incident bundle that NewFileSource reads back
// and that replays without a server. It returns the number of records written. A cancelled ctx stops
// it; what was written so far is a valid, shorter bundle.
func Export(ctx context.Context, src Source, w io.Writer, progress func(records int, fraction float64)) (int, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	var buf []byte
	n := 0
	for {
		r, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = bw.Flush()
			return n, err
		}
		buf = r.AppendNDJSON(buf[:0])
		if _, err := bw.Write(buf); err != nil {
			return n, fmt.Errorf("write bundle: %w", err)
		}
		n++
		if progress != nil && n%8192 == 0 {
			progress(n, src.Progress())
		}
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("write bundle: %w", err)
	}
	return n, nil
}
