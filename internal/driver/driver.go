// Package driver runs one batch end to end: it builds the manifest of the
// inputs, registers the batch (pinning its id and timestamp), builds and runs
// the pipeline, then records the outcome and returns the run report.
package driver

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx" // every runner and filesystem

	"github.com/balancebeam/balancebeam/internal/manifest"
	"github.com/balancebeam/balancebeam/pipeline"
	"github.com/balancebeam/balancebeam/sinks"
	"github.com/balancebeam/balancebeam/transforms"
)

// Options are one run's settings.
type Options struct {
	// Inputs are file paths or globs, each possibly a comma-separated list.
	Inputs []string
	// DSN is the database. A password in it is kept out of the graph.
	DSN string
	// PasswordFile is read by the sink workers at Setup (remote runners).
	PasswordFile string
	// Table is the accounts table (default "accounts").
	Table string
	// Shards is the number of sink shards (default 4).
	Shards int
	// BatchID forces the batch id when not zero.
	BatchID int64
	// Recheck runs a batch that is committed already through the pipeline
	// again (reading, deduplicating and writing every row, and proving the
	// run whole with its marks; in no mode but lww can that change a row).
	// Without it, a committed batch whose inputs are unchanged is reported
	// as it was committed, and nothing is read or written.
	Recheck bool
	// Runner is the Beam runner (default "prism").
	Runner string
	// Parse tunes the dedup buckets and block size.
	Parse transforms.ParseConfig
	// FlushRows bounds one sink flush (0: the mode's default).
	FlushRows int
	// MaxRejects is how many rejected rows a run may have and still succeed.
	MaxRejects Threshold
	// Mode is how balances are written (default snapshot); a table keeps the
	// mode of its first run.
	Mode sinks.Mode
	// FailAfterFlushes injects a sink fault (tests and chaos only).
	FailAfterFlushes int
	// SplitAccounts injects a broken partitioner that sends each account to
	// two shards (tests and chaos only).
	SplitAccounts bool
	// Clock pins the batch timestamp of a new batch; nil means time.Now.
	Clock func() time.Time
	// Progress, when positive, logs a line at this interval while the
	// pipeline runs.
	Progress time.Duration
	// AfterRegister, when set, is called once the batch is registered with
	// its manifest and before the pipeline reads the files (tests and chaos
	// only: to change an input in between, deterministically).
	AfterRegister func(files []manifest.File)
}

// DefaultShards is the shard count when Options.Shards is zero.
const DefaultShards = 4

// Report is what a run did.
type Report struct {
	// DryRun is set when the runner only translated the job (Dataflow's
	// --dry_run): nothing ran and nothing was written.
	DryRun bool `json:"dry_run,omitempty"`
	// Unchanged is set when the batch was committed already with these
	// very inputs and Options.Recheck was not: no run was made, the counts
	// are those of the committing run (CommittedRun), and nothing was
	// written.
	Unchanged      bool       `json:"unchanged,omitempty"`
	CommittedRun   int        `json:"committed_run,omitempty"`
	BatchID        int64      `json:"batch_id"`
	Run            int        `json:"run"`
	NewBatch       bool       `json:"new_batch"`
	PreviousStatus string     `json:"previous_status,omitempty"`
	PinnedAt       time.Time  `json:"pinned_at"`
	Table          string     `json:"table"`
	Mode           sinks.Mode `json:"mode"`
	Runner         string     `json:"runner"`
	Shards         int        `json:"shards"`
	Files          []string   `json:"files"`

	RowsRead         int64            `json:"rows_read"`
	RowsApplied      int64            `json:"rows_applied"`
	Duplicates       int64            `json:"duplicates_collapsed"`
	Rejected         int64            `json:"rows_rejected"`
	RejectedByReason map[string]int64 `json:"rejected_by_reason"`
	Accounts         int64            `json:"accounts"`
	RowsUpserted     int64            `json:"rows_upserted"`
	RowsStale        int64            `json:"rows_skipped_stale"`
	// Ledger mode: transactions new to the ledger, already in it, and
	// conflicting with it (rejected, counted in Rejected too).
	LedgerInserted  int64         `json:"ledger_inserted,omitempty"`
	LedgerKnown     int64         `json:"ledger_known,omitempty"`
	LedgerConflicts int64         `json:"ledger_conflicts,omitempty"`
	Elapsed         time.Duration `json:"elapsed_ns"`
}

// ErrIncompleteRun is returned when the runner reported success but the
// run's marks show that part of the batch was not written (a runner that lost
// or duplicated data, as Prism 2.62 can on a failed bundle). The batch is not
// committed; rerunning it repairs the table.
var ErrIncompleteRun = errors.New("the runner reported success but the run is incomplete")

// ErrTooManyRejects is returned (with a report) when a run rejected more
// rows than Options.MaxRejects allows. The batch is committed all the same:
// the balances are right for the rows that were valid.
var ErrTooManyRejects = errors.New("too many rejected rows")

// Run runs one batch. On success, and on ErrTooManyRejects, the report is
// complete; on other errors it is nil or partial.
func Run(ctx context.Context, opts Options) (*Report, error) {
	start := time.Now()
	if opts.Shards <= 0 {
		opts.Shards = DefaultShards
	}
	if opts.Runner == "" {
		opts.Runner = "prism"
	}
	if opts.Mode == "" {
		opts.Mode = sinks.ModeSnapshot
	}
	if _, err := sinks.ParseMode(string(opts.Mode)); err != nil {
		return nil, err
	}
	clock := opts.Clock
	if clock == nil {
		clock = time.Now
	}
	tables := sinks.Tables{Accounts: opts.Table}
	if err := tables.Validate(); err != nil {
		return nil, err
	}

	m, err := manifest.Build(ctx, manifest.SplitPatterns(opts.Inputs))
	if err != nil {
		return nil, err
	}
	dryRun, err := isDryRun(opts.Runner)
	if err != nil {
		return nil, err
	}
	if dryRun {
		return translateOnly(ctx, opts, tables, m, clock, start)
	}

	cleanDSN, password, err := sinks.SplitPassword(opts.DSN)
	if err != nil {
		return nil, err
	}
	if password != "" && os.Getenv("PGPASSWORD") == "" {
		// In-process workers (direct, Prism, loopback) find it here; remote
		// workers need PasswordFile or their own PGPASSWORD.
		os.Setenv("PGPASSWORD", password)
	}
	pool, err := sinks.OpenPool(ctx, sinks.Connection{DSN: opts.DSN, MaxConns: 2})
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", sinks.Redact(cleanDSN), err)
	}
	// The driver's own statements ride out a dropped connection or a database
	// restart like the sinks' do; each is idempotent.
	retry := sinks.DefaultRetry
	if err := retry.Do(ctx, "create schema", func() error { return sinks.EnsureSchema(ctx, pool, tables, opts.Mode) }); err != nil {
		return nil, err
	}
	reg := &sinks.Registry{Pool: pool, Tables: tables}
	pinnedAt := clock()
	var batch sinks.Batch
	if err := retry.Do(ctx, "register the batch", func() (err error) {
		batch, err = reg.Register(ctx, sinks.BatchRequest{
			ManifestSHA256: m.SHA256, Files: m.Files, PinnedAt: pinnedAt, ForceID: opts.BatchID, KeepCommitted: !opts.Recheck,
		})
		return err
	}); err != nil {
		return nil, explainConflict(ctx, reg, opts.BatchID, m, err)
	}
	if batch.Committed {
		rep, err := unchanged(batch, m, opts.Mode, start)
		if err != nil {
			return nil, err
		}
		slog.Info("batch committed already, inputs unchanged: nothing to do (--recheck runs it again)",
			"batch", batch.ID, "table", tables.Key(), "committed_run", rep.CommittedRun)
		return rep, opts.MaxRejects.check(rep)
	}
	rep := &Report{
		BatchID: batch.ID, Run: batch.Run, NewBatch: batch.New, PreviousStatus: batch.PreviousStatus, PinnedAt: batch.PinnedAt,
		Table: tables.Key(), Mode: opts.Mode, Runner: opts.Runner, Shards: opts.Shards,
	}
	rep.Files = filePaths(m)
	slog.Info("batch registered", "batch", batch.ID, "new", batch.New, "files", len(m.Files), "table", tables.Key(), "database", sinks.Redact(cleanDSN))
	if opts.AfterRegister != nil {
		opts.AfterRegister(m.Files)
	}
	p, parse := buildGraph(opts, tables, m, cleanDSN, batch)

	stop := progress(opts.Progress, start, batch.ID)
	_, err = beam.Run(ctx, opts.Runner, p)
	stop()
	if err != nil {
		err = fmt.Errorf("batch %d: pipeline failed: %w", batch.ID, err)
		fail(context.WithoutCancel(ctx), reg, batch.ID, err)
		return nil, err
	}

	// The report comes from the database, not from runner metrics.
	if err := retry.Do(ctx, "check the run's marks", func() error { return checkMarks(ctx, reg, rep, parse.Buckets) }); err != nil {
		err = fmt.Errorf("batch %d: %w: %w; the batch is not committed: run it again", batch.ID, ErrIncompleteRun, err)
		fail(context.WithoutCancel(ctx), reg, batch.ID, err)
		return nil, err
	}
	rep.Elapsed = time.Since(start)
	if err := retry.Do(ctx, "commit the batch", func() error { return reg.Commit(ctx, batch.ID, rep) }); err != nil {
		return nil, err
	}
	return rep, opts.MaxRejects.check(rep)
}

// check returns ErrTooManyRejects when the report has more rejected rows
// than t allows.
func (t Threshold) check(rep *Report) error {
	if allowed := t.Allowed(rep.RowsRead); rep.Rejected > allowed {
		return fmt.Errorf("%w: %d rows rejected, %s allowed (see table rejected_rows, batch_id %d)",
			ErrTooManyRejects, rep.Rejected, t, rep.BatchID)
	}
	return nil
}

// unchanged is the report of a committed batch run again on the same
// inputs: what its committing run recorded, with nothing written now.
func unchanged(batch sinks.Batch, m *manifest.Manifest, mode sinks.Mode, start time.Time) (*Report, error) {
	var rep Report
	if err := json.Unmarshal(batch.Counts, &rep); err != nil {
		return nil, fmt.Errorf("batch %d: read the counts its committing run recorded: %w", batch.ID, err)
	}
	rep.Unchanged, rep.CommittedRun = true, rep.Run
	rep.Run, rep.NewBatch, rep.PreviousStatus = batch.Run, false, batch.PreviousStatus
	rep.BatchID, rep.PinnedAt, rep.Files, rep.Mode = batch.ID, batch.PinnedAt, filePaths(m), mode
	rep.RowsUpserted, rep.RowsStale, rep.LedgerInserted, rep.LedgerKnown = 0, 0, 0, 0
	rep.Elapsed = time.Since(start)
	return &rep, nil
}

// buildGraph builds the batch's pipeline; the DSN has no password.
func buildGraph(opts Options, tables sinks.Tables, m *manifest.Manifest, cleanDSN string, batch sinks.Batch) (*beam.Pipeline, transforms.ParseConfig) {
	parse := opts.Parse.WithDefaults()
	files := make([]transforms.FileSpec, len(m.Files))
	for i, f := range m.Files {
		files[i] = fileSpec(i, f)
	}
	p, s := beam.NewPipelineWithRoot()
	pipeline.Build(s, pipeline.Config{
		Files:         files,
		Parse:         parse,
		Shards:        opts.Shards,
		SplitAccounts: opts.SplitAccounts,
		Target: sinks.Target{
			Conn:             sinks.Connection{DSN: cleanDSN, PasswordFile: opts.PasswordFile, MaxConns: 2},
			Tables:           tables,
			Mode:             opts.Mode,
			BatchID:          batch.ID,
			Run:              batch.Run,
			PinnedAt:         batch.PinnedAt,
			Buckets:          parse.Buckets,
			FlushRows:        opts.FlushRows,
			FailAfterFlushes: opts.FailAfterFlushes,
		},
	})
	return p, parse
}

// isDryRun reports whether Dataflow's --dry_run is set. It is an error with
// any other runner, which would run the job for real.
func isDryRun(runner string) (bool, error) {
	f := flag.Lookup("dry_run")
	if f == nil || f.Value.String() != "true" {
		return false, nil
	}
	if runner != "dataflow" && runner != "DataflowRunner" {
		return false, fmt.Errorf("--dry_run is a flag of the Dataflow runner; with --runner=%s the job would run for real", runner)
	}
	return true, nil
}

// translateOnly is a dry run: it builds the graph a real run would build,
// with a placeholder batch (id 0, run 0, pinned now), and hands it to the
// runner, which translates it and prints the job without submitting it. It
// never connects to the database.
func translateOnly(ctx context.Context, opts Options, tables sinks.Tables, m *manifest.Manifest, clock func() time.Time, start time.Time) (*Report, error) {
	cleanDSN, _, err := sinks.SplitPassword(opts.DSN)
	if err != nil {
		return nil, err
	}
	batch := sinks.Batch{PinnedAt: clock().UTC()}
	p, _ := buildGraph(opts, tables, m, cleanDSN, batch)
	if _, err := beam.Run(ctx, opts.Runner, p); err != nil {
		return nil, fmt.Errorf("dry run: %w", err)
	}
	return &Report{DryRun: true, PinnedAt: batch.PinnedAt, Table: tables.Key(), Mode: opts.Mode, Runner: opts.Runner, Shards: opts.Shards,
		Files: filePaths(m), Elapsed: time.Since(start)}, nil
}

// fail records a failed run, retrying like the other statements.
func fail(ctx context.Context, reg *sinks.Registry, batch int64, cause error) {
	retry := sinks.DefaultRetry
	if err := retry.Do(ctx, "record the failure", func() error { return reg.Fail(ctx, batch, cause) }); err != nil {
		slog.Error("could not record the failure", "batch", batch, "error", err)
	}
}

// checkMarks accepts a run only if every shard wrote its mark row in this
// run, each mark saw every dedup bucket, the marks agree on the batch's row
// counts, and every rejected row is stored. It fills the report's counts from
// them: exact, whatever the runner's metrics say.
func checkMarks(ctx context.Context, reg *sinks.Registry, rep *Report, buckets int) error {
	marks, err := reg.ShardMarks(ctx, rep.BatchID, rep.Run)
	if err != nil {
		return err
	}
	rep.Accounts, rep.RowsUpserted, rep.RowsStale = 0, 0, 0
	rep.LedgerInserted, rep.LedgerKnown, rep.LedgerConflicts = 0, 0, 0
	seen := make([]bool, rep.Shards)
	for i, m := range marks {
		if m.Shard < 0 || m.Shard >= rep.Shards {
			return fmt.Errorf("a mark names shard %d of %d", m.Shard, rep.Shards)
		}
		seen[m.Shard] = true
		if m.Buckets != buckets {
			return fmt.Errorf("shard %d saw %d of %d dedup buckets", m.Shard, m.Buckets, buckets)
		}
		if m.RowsRead != marks[0].RowsRead || m.Applied != marks[0].Applied || m.Duplicates != marks[0].Duplicates || m.Rejected != marks[0].Rejected {
			return fmt.Errorf("shards %d and %d disagree on the batch's row counts", marks[0].Shard, marks[i].Shard)
		}
		rep.Accounts += m.Accounts
		rep.RowsUpserted += m.Upserted
		rep.RowsStale += m.Stale
		rep.LedgerInserted += m.Inserted
		rep.LedgerKnown += m.Known
		rep.LedgerConflicts += m.Conflicts
	}
	var missing []int
	for s, ok := range seen {
		if !ok {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d of %d shards (%v) have no mark of this run: their balances may not be written", len(missing), rep.Shards, missing)
	}
	m := marks[0]
	rep.RowsRead, rep.RowsApplied, rep.Duplicates = m.RowsRead, m.Applied, m.Duplicates
	if rep.Mode == sinks.ModeLedger {
		rep.RowsApplied = rep.LedgerInserted // what this run added to the balances
	}
	if m.RowsRead != m.Applied+m.Duplicates+m.Rejected {
		return fmt.Errorf("rows read %d != applied %d + duplicates %d + rejected %d", m.RowsRead, m.Applied, m.Duplicates, m.Rejected)
	}
	byReason, err := reg.RejectCounts(ctx, rep.BatchID)
	if err != nil {
		return err
	}
	rep.RejectedByReason = byReason
	rep.Rejected = 0
	for _, n := range byReason {
		rep.Rejected += n
	}
	if rep.Mode == sinks.ModeLedger {
		if got := rep.LedgerInserted + rep.LedgerKnown + rep.LedgerConflicts; got != m.Applied {
			return fmt.Errorf("the ledger accounted for %d transactions of %d", got, m.Applied)
		}
	}
	if want := m.Rejected + rep.LedgerConflicts; rep.Rejected != want {
		return fmt.Errorf("%d rows were rejected but %d are stored in rejected_rows", want, rep.Rejected)
	}
	return nil
}

// progress logs a line every interval until the returned func is called.
func progress(every time.Duration, start time.Time, batch int64) func() {
	if every <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				slog.Info("pipeline running", "batch", batch, "elapsed", time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done) }
}

// Threshold is an allowance of rejected rows: a count, or a percentage of
// the rows read ("0.5%").
type Threshold struct {
	Count   int64
	Percent float64
	IsPct   bool
}

// ParseThreshold parses "N" or "P%".
func ParseThreshold(s string) (Threshold, error) {
	s = strings.TrimSpace(s)
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		p, err := strconv.ParseFloat(pct, 64)
		if err != nil || p < 0 || p > 100 {
			return Threshold{}, fmt.Errorf("threshold %q: want a count or a percentage from 0%% to 100%%", s)
		}
		return Threshold{Percent: p, IsPct: true}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return Threshold{}, fmt.Errorf("threshold %q: want a count or a percentage such as 0.5%%", s)
	}
	return Threshold{Count: n}, nil
}

// Allowed returns how many rejected rows of read are allowed.
func (t Threshold) Allowed(read int64) int64 {
	if t.IsPct {
		return int64(t.Percent / 100 * float64(read))
	}
	return t.Count
}

func (t Threshold) String() string {
	if t.IsPct {
		return strconv.FormatFloat(t.Percent, 'f', -1, 64) + "%"
	}
	return strconv.FormatInt(t.Count, 10)
}

func filePaths(m *manifest.Manifest) []string {
	out := make([]string, len(m.Files))
	for i, f := range m.Files {
		out[i] = f.Path
	}
	return out
}
