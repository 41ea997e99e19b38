package transforms

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"reflect"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs"   // gs:// objects
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local" // local paths
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// FileSpec is one input file of a batch as pinned by the batch's manifest:
// the reader checks that what it reads is still what was registered.
type FileSpec struct {
	// Index is the file's position in the manifest; rows refer to it.
	Index int32
	// Path is the file's absolute path or URL.
	Path string
	// Size is the file's size in bytes when the manifest was built.
	Size int64
	// SHA256 is the hex SHA-256 of a local file's contents.
	SHA256 string
	// Generation is a GCS object's generation: the reader reads exactly it.
	Generation int64
	// CRC32C is a GCS object's CRC32C (base64, as GCS reports it).
	CRC32C string
	// RawInFile says that Path is a local file the dedup stage can read
	// again: a plain row then leaves its raw text in the file, as an
	// offset and a length, instead of carrying it through the shuffle. The
	// text is only needed should the row turn out to be a conflicting
	// duplicate; it is more than half of a row's bytes.
	RawInFile bool
}

// ErrChanged is returned (wrapped) when what the reader read is not what the
// batch's manifest registered.
var ErrChanged = errors.New("changed since its batch was registered")

// ParseConfig sets how Parse packs rows.
type ParseConfig struct {
	// Buckets is how many dedup buckets transaction ids are spread over.
	Buckets int
	// BlockBytes is the size at which a bucket's block is sent on.
	BlockBytes int
}

// DefaultParseConfig is used for zero fields of a ParseConfig.
var DefaultParseConfig = ParseConfig{Buckets: 64, BlockBytes: 512 << 10}

// WithDefaults fills zero fields from DefaultParseConfig.
func (c ParseConfig) WithDefaults() ParseConfig {
	if c.Buckets <= 0 {
		c.Buckets = DefaultParseConfig.Buckets
	}
	if c.BlockBytes <= 0 {
		c.BlockBytes = DefaultParseConfig.BlockBytes
	}
	return c
}

// Beam metrics counted by the transforms.
var (
	rowsRead     = beam.NewCounter(MetricsNamespace, MetricRowsRead)
	rowsRejected = beam.NewCounter(MetricsNamespace, MetricRowsRejected)
	rowsApplied  = beam.NewCounter(MetricsNamespace, MetricRowsApplied)
	duplicates   = beam.NewCounter(MetricsNamespace, MetricDuplicates)
)

// Metric names. The run report reads them back from the pipeline result.
const (
	MetricsNamespace   = "balancebeam"
	MetricRowsRead     = "rows_read"
	MetricRowsRejected = "rows_rejected"
	MetricRowsApplied  = "rows_applied"
	MetricDuplicates   = "duplicates_collapsed"
)

func init() {
	beam.RegisterType(reflect.TypeOf((*FileSpec)(nil)).Elem())
	beam.RegisterCoder(reflect.TypeOf((*Block)(nil)).Elem(), EncodeBlock, DecodeBlock)
	register.Function1x1(EncodeBlock)
	register.Function1x1(DecodeBlock)
	register.DoFn3x1[context.Context, FileSpec, func(int, Block), error](&ParseFileFn{})
	register.Emitter2[int, Block]()
}

// Parse reads each file of the batch and parses its rows into blocks keyed
// by dedup bucket (FNV-1a of the transaction id). Rejected rows travel in
// the same blocks, so that nothing about a file is written before every file
// has been read and checked.
func Parse(s beam.Scope, files beam.PCollection, cfg ParseConfig) beam.PCollection {
	s = s.Scope("Parse")
	cfg = cfg.WithDefaults()
	// Spread the files over workers; each file is read by one of them.
	files = beam.Reshuffle(s, files)
	return beam.ParDo(s, &ParseFileFn{Buckets: cfg.Buckets, BlockBytes: cfg.BlockBytes}, files)
}

// ParseFileFn reads one file and emits its rows packed in per-bucket blocks.
// It fails, emitting nothing that will be committed, when the file cannot be
// read, lacks a header or no longer matches its manifest entry.
type ParseFileFn struct {
	Buckets    int
	BlockBytes int
}

// ProcessElement reads and parses one file.
func (f *ParseFileFn) ProcessElement(ctx context.Context, file FileSpec, emit func(int, Block)) error {
	rc, err := openFile(ctx, file)
	if err != nil {
		return err
	}
	defer rc.Close()

	stats, err := ParseStream(rc, file, f.Buckets, f.BlockBytes, emit)
	if err != nil {
		if errors.Is(err, ErrChanged) && file.Generation != 0 {
			err = fmt.Errorf("%w (%s)", err, currentGeneration(ctx, file))
		}
		return err
	}
	rowsRead.Inc(ctx, stats.Rows)
	rowsRejected.Inc(ctx, stats.Rejected)
	slog.Info("read file", "file", file.Path, "rows", stats.Rows, "rejected", stats.Rejected)
	return nil
}

// ParseStats counts what ParseStream saw.
type ParseStats struct {
	Rows, Rejected int64
}

// ParseStream parses one file's contents. It checks the contents against the
// manifest entry (size, and SHA-256 or CRC32C) when the entry has them, and
// emits the blocks in a deterministic order, ending with one block for every
// bucket that carries the file's end mark.
func ParseStream(r io.Reader, file FileSpec, buckets, blockBytes int, emit func(int, Block)) (ParseStats, error) {
	var stats ParseStats
	var h hash.Hash
	var crc hash.Hash32
	counted := &countingReader{r: r}
	src := io.Reader(counted)
	if file.SHA256 != "" {
		h = sha256.New()
		src = io.TeeReader(src, h)
	}
	if file.CRC32C != "" {
		crc = crc32.New(castagnoli)
		src = io.TeeReader(src, crc)
	}
	cr := txnfile.NewCSVReader(src)
	first, err := cr.Next()
	if errors.Is(err, io.EOF) {
		return stats, fmt.Errorf("%s: %w", file.Path, txnfile.ErrNoHeader)
	}
	if err != nil {
		return stats, fmt.Errorf("read %s: %w", file.Path, err)
	}
	header, err := txnfile.ParseHeader(first)
	if err != nil {
		return stats, fmt.Errorf("%s line %d: %w", file.Path, first.Line, err)
	}
	if buckets < 1 {
		buckets = 1
	}
	blocks := make([]Block, buckets)
	perBucket := make([]int64, buckets)
	// A block holds about twice the bytes of its rows' text (the raw row
	// and its parsed fields): size each block once, for the file's share
	// of a bucket, rather than growing it by copying.
	capacity := blockBytes + 4<<10
	if file.Size > 0 {
		capacity = int(min(int64(capacity), 2*file.Size/int64(buckets)+4<<10))
	}
	for b := range blocks {
		blocks[b].Data = make([]byte, 0, capacity)
	}
	flush := func(b int, last bool) {
		emit(b, blocks[b])
		// The emitted block is never written again.
		blocks[b] = Block{}
		if !last {
			blocks[b].Data = make([]byte, 0, blockBytes+4<<10)
		}
	}
	for {
		rec, err := cr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return stats, fmt.Errorf("read %s: %w", file.Path, err)
		}
		stats.Rows++
		row, reason, detail := txnfile.ParseRow(header, rec)
		var b int
		if reason != txnfile.ReasonNone {
			stats.Rejected++
			b = int(rec.Line % int64(buckets))
			blocks[b].AppendReject(file.Index, rec.Line, reason, detail, rec.Raw)
		} else {
			b = DedupBucket(row.ID, buckets)
			if file.RawInFile && rec.InInput {
				blocks[b].AppendTxnRef(row.ID, row.Account, row.Cents, row.AtMicros, file.Index, rec.Line,
					rec.Offset, int64(len(txnfile.CutRaw(rec.Raw))))
			} else {
				blocks[b].AppendTxn(row.ID, row.Account, row.Cents, row.AtMicros, file.Index, rec.Line, rec.Raw)
			}
		}
		perBucket[b]++
		if blocks[b].Len() >= blockBytes {
			flush(b, false)
		}
	}
	if file.Size > 0 && counted.n != file.Size {
		return stats, fmt.Errorf("%s %w: size was %d bytes, read %d", file.Path, ErrChanged, file.Size, counted.n)
	}
	if h != nil {
		if got := hex.EncodeToString(h.Sum(nil)); got != file.SHA256 {
			return stats, fmt.Errorf("%s %w: sha256 was %s, read %s", file.Path, ErrChanged, file.SHA256, got)
		}
	}
	if crc != nil {
		if got := encodeCRC32C(crc.Sum32()); got != file.CRC32C {
			return stats, fmt.Errorf("%s %w: crc32c was %s, read %s", file.Path, ErrChanged, file.CRC32C, got)
		}
	}
	// The file is whole: every bucket gets its end mark, after its rows.
	for b := range blocks {
		blocks[b].AppendFileDone(file.Index, perBucket[b])
		flush(b, true)
	}
	return stats, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
