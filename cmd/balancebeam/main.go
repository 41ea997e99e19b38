// Command balancebeam reads files of financial transactions, deduplicates
// them, computes per-account balances and writes them to PostgreSQL so that
// retries, reruns, late files and any parallelism never leave a wrong
// balance.
//
//	balancebeam --input 'testdata/day1/*.csv' --database postgres://...
//	balancebeam verify [--table accounts] [--batch_id N] [--json]
//	balancebeam db status|stop     # the embedded default database
//
// With no --database and no DATABASE_URL it uses an embedded PostgreSQL kept
// under --state_dir. Beam's flags (--runner, --endpoint, --environment_type,
// ...) work as in any Beam Go program; the default runner is Prism.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners" // --runner
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	"github.com/balancebeam/balancebeam/internal/chaos"
	"github.com/balancebeam/balancebeam/internal/driver"
	"github.com/balancebeam/balancebeam/internal/localpg"
	"github.com/balancebeam/balancebeam/internal/logs"
	"github.com/balancebeam/balancebeam/internal/scratch"
	"github.com/balancebeam/balancebeam/internal/verify"
	"github.com/balancebeam/balancebeam/sinks"
	"github.com/balancebeam/balancebeam/transforms"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitTooManyRejs = 3
	// verify: the table differs (exitFailed), or it could not be checked.
	exitDifferent  = 1
	exitUnverified = 4
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

var (
	inputs       stringList
	database     = flag.String("database", "", "PostgreSQL URL (default $DATABASE_URL, else the embedded database under --state_dir)")
	passwordFile = flag.String("database_password_file", "", "file holding the database password, read by each sink worker at start-up (for remote runners)")
	table        = flag.String("table", sinks.DefaultAccountsTable, "accounts table, optionally schema-qualified")
	mode         = flag.String("mode", string(sinks.ModeSnapshot), "how balances are written: ledger (idempotency-first), snapshot (balanced) or lww (concurrency-first); a table keeps the mode of its first run")
	toMode       = flag.String("to", "", "with convert: the mode to convert the table to")
	shards       = flag.Int("shards", driver.DefaultShards, "number of sink shards; each account is written by exactly one")
	batchID      = flag.Int64("batch_id", 0, "force this batch id (an error if it belongs to other inputs)")
	recheck      = flag.Bool("recheck", false, "run a batch that is committed already, with unchanged inputs, through the pipeline again instead of reporting it as committed")
	maxRejects   = flag.String("max_rejects", "0", "rejected rows allowed before the run exits non-zero: a count or a percentage such as 0.5%")
	flushRows    = flag.Int("flush_rows", 0, "rows per sink flush (one transaction); 0: 10000 accounts, or in ledger mode 1000000 transactions")
	buckets      = flag.Int("dedup_buckets", transforms.DefaultParseConfig.Buckets, "dedup buckets transaction ids are spread over")
	stateDir     = flag.String("state_dir", ".balancebeam", "folder of the embedded database")
	logLevel     = flag.String("log_level", "info", "debug, info, warn or error")
	jsonReport   = flag.Bool("json", false, "print the run report as JSON")
	progressInt  = flag.Duration("progress", 10*time.Second, "log progress at this interval while the pipeline runs (0: never)")
	cpuProfile   = flag.String("cpuprofile", "", "write a CPU profile of the run to this file (in-process runners: direct, Prism)")
	memProfile   = flag.String("memprofile", "", "write a heap profile (allocations) at the end of the run to this file")
	maxDiffs     = flag.Int("max_diffs", verify.DefaultMaxDiffs, "verify: how many differences to list")
	history      = flag.Bool("history", false, "verify: compare every account with all the distinct transactions of every committed batch, not only the batch that wrote it")

	chaosSeed      = flag.Int64("seed", 1, "with chaos: the seed of the data and of every fault (replays a matrix)")
	chaosLarge     = flag.Bool("large", false, "with chaos: the large matrix (200k rows) instead of the CI one (4k rows)")
	chaosScenarios = flag.String("scenarios", "", "with chaos: comma-separated scenarios (default all)")
	chaosModes     = flag.String("modes", "", "with chaos: comma-separated modes (default all)")
	chaosRunners   = flag.String("runners", "direct,prism", "with chaos: comma-separated runners")
	chaosMarkdown  = flag.String("markdown", "", "with chaos: also write the matrix as Markdown to this file")
)

func init() {
	flag.Var(&inputs, "input", "input files or globs, comma-separated or repeated")
}

func usage() {
	out := flag.CommandLine.Output()
	fmt.Fprintf(out, `balancebeam: transaction files to guarded PostgreSQL balances, on any Beam runner.

Usage:
  balancebeam [run] --input 'day1/*.csv' [--database postgres://...] [--mode ledger|snapshot|lww] [flags]
  balancebeam verify [--database postgres://...] [--table T] [--batch_id N | --history] [--json] [--max_diffs N]
  balancebeam recompute [--table T]         rebuild a ledger table's balances from its ledger
  balancebeam convert --to MODE [--table T] switch a table to another mode
  balancebeam chaos [--seed N] [--large] [--scenarios a,b] [--modes m] [--runners r] [--markdown F]
                                            the fault matrix on a throwaway PostgreSQL
  balancebeam db status|stop [--state_dir DIR]

verify recomputes the balances from the batches' registered input files, without Beam, and
compares them with the table: exit 0 equal, 1 different, 4 could not verify (files gone or
changed, or no database).

Flags of balancebeam (Beam's own flags, such as --runner, are accepted too):
`)
	for _, name := range []string{"input", "database", "database_password_file", "table", "mode", "to", "shards", "batch_id",
		"recheck", "max_rejects", "flush_rows", "dedup_buckets", "state_dir", "json", "max_diffs", "history", "progress", "log_level", "cpuprofile", "memprofile", "runner"} {
		if f := flag.Lookup(name); f != nil {
			fmt.Fprintf(out, "  --%s\t%s (default %q)\n", f.Name, f.Usage, f.DefValue)
		}
	}
}

func main() {
	flag.Usage = usage
	// Flags may come before or after the command: parse up to the command,
	// then the rest.
	if err := flag.CommandLine.Parse(os.Args[1:]); err != nil {
		os.Exit(exitUsage)
	}
	cmd, rest := "run", flag.Args()
	if len(rest) > 0 {
		cmd = rest[0]
		if err := flag.CommandLine.Parse(rest[1:]); err != nil {
			os.Exit(exitUsage)
		}
		rest = flag.Args()
	}
	// Right after flags: a worker binary started by a runner becomes a
	// worker here and never returns.
	beam.Init()
	if err := logs.Setup(os.Stderr, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "balancebeam:", err)
		os.Exit(exitUsage)
	}
	commands := map[string]func([]string) int{
		"run":       runCmd,
		"db":        dbCmd,
		"verify":    verifyCmd,
		"recompute": func(args []string) int { return tableCmd("recompute", args) },
		"convert":   func(args []string) int { return tableCmd("convert", args) },
		"chaos":     chaosCmd,
		"help":      func([]string) int { usage(); return exitOK },
	}
	run, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(os.Stderr, "balancebeam: unknown command %q (want run, verify, recompute, convert, chaos or db)\n", cmd)
		os.Exit(exitUsage)
	}
	done := scratch.Use("balancebeam-")
	code := run(rest)
	done()
	os.Exit(code)
}

func runCmd(args []string) int {
	if len(args) > 0 {
		fmt.Fprintf(os.Stderr, "balancebeam: unexpected arguments %q (inputs go in --input)\n", args)
		return exitUsage
	}
	threshold, err := driver.ParseThreshold(*maxRejects)
	if err != nil {
		fmt.Fprintln(os.Stderr, "balancebeam: --max_rejects:", err)
		return exitUsage
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	m, err := sinks.ParseMode(*mode)
	if err != nil {
		fmt.Fprintln(os.Stderr, "balancebeam: --mode:", err)
		return exitUsage
	}
	runner := *runners.Runner
	if runner == "" {
		runner = "prism"
	}
	if (runner == "dataflow" || runner == "DataflowRunner") && *database == "" && os.Getenv("DATABASE_URL") == "" {
		fmt.Fprintln(os.Stderr, "balancebeam: --runner=dataflow needs --database (or DATABASE_URL): a PostgreSQL the Dataflow workers can reach; the embedded database is on this machine only")
		return exitUsage
	}
	dsn, err := databaseURL(ctx)
	if err != nil {
		slog.Error("no database", "error", err)
		return exitFailed
	}

	// Beam hands every flag to the runner and its workers as a pipeline
	// option (Dataflow shows them on the job's page): the password must not
	// be among them. The driver keeps it out of the graph itself.
	if clean, password, err := sinks.SplitPassword(*database); err == nil && password != "" {
		flag.Set("database", clean)
	}
	if f := flag.Lookup("dry_run"); f != nil && f.Value.String() == "true" {
		// Dataflow's dry run prints the translated job through Beam's log.
		logs.BeamTo(os.Stdout)
	}
	stopProfiles, err := startProfiles(*cpuProfile, *memProfile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "balancebeam:", err)
		return exitUsage
	}
	defer stopProfiles()
	rep, err := driver.Run(ctx, driver.Options{
		Inputs:       inputs,
		DSN:          dsn,
		PasswordFile: *passwordFile,
		Table:        *table,
		Mode:         m,
		Shards:       *shards,
		BatchID:      *batchID,
		Recheck:      *recheck,
		Runner:       runner,
		Parse:        transforms.ParseConfig{Buckets: *buckets},
		FlushRows:    *flushRows,
		MaxRejects:   threshold,
		Progress:     *progressInt,
	})
	if rep != nil {
		if *jsonReport {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			enc.Encode(rep)
		} else {
			rep.WriteText(os.Stdout)
		}
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, driver.ErrTooManyRejects):
		slog.Error("run finished with rejected rows", "error", err)
		return exitTooManyRejs
	default:
		slog.Error("run failed", "error", err)
		return exitFailed
	}
}

// startProfiles starts the CPU profile and returns what writes both
// profiles at the end of the run.
func startProfiles(cpu, mem string) (func(), error) {
	var cpuFile *os.File
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		cpuFile = f
	}
	return func() {
		if cpuFile != nil {
			pprof.StopCPUProfile()
			cpuFile.Close()
		}
		if mem != "" {
			f, err := os.Create(mem)
			if err != nil {
				slog.Error("--memprofile", "error", err)
				return
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				slog.Error("--memprofile", "error", err)
			}
		}
	}, nil
}

// databaseURL is --database, else $DATABASE_URL, else the embedded
// database, started if need be.
func databaseURL(ctx context.Context) (string, error) {
	if *database != "" {
		return *database, nil
	}
	if dsn := os.Getenv("DATABASE_URL"); dsn != "" {
		return dsn, nil
	}
	c, err := localpg.Start(ctx, localpg.Options{Dir: filepath.Join(*stateDir, "pg"), Durable: true})
	if err != nil {
		return "", fmt.Errorf("no --database given and the embedded PostgreSQL did not start: %w", err)
	}
	verb := "reusing"
	if c.Started {
		verb = "started"
	}
	slog.Info(verb+" the embedded PostgreSQL", "dir", c.Dir, "port", c.Port, "connect", c.PsqlCommand(),
		"stop", "balancebeam db stop --state_dir "+*stateDir)
	return c.DSN(), nil
}

// tableCmd runs recompute and convert.
func tableCmd(cmd string, args []string) int {
	if len(args) > 0 {
		fmt.Fprintf(os.Stderr, "balancebeam %s: unexpected arguments %q\n", cmd, args)
		return exitUsage
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	dsn, err := databaseURL(ctx)
	if err != nil {
		slog.Error("no database", "error", err)
		return exitFailed
	}
	pool, err := sinks.OpenPool(ctx, sinks.Connection{DSN: dsn, MaxConns: 1})
	if err != nil {
		slog.Error("connect", "error", err)
		return exitFailed
	}
	defer pool.Close()
	tables := sinks.Tables{Accounts: *table}
	switch cmd {
	case "recompute":
		changed, removed, err := sinks.Recompute(ctx, pool, tables)
		if err != nil {
			slog.Error("recompute failed", "error", err)
			return exitFailed
		}
		fmt.Printf("recomputed %s from %s: %d accounts changed, %d removed\n", tables.Key(), tables.Ledger(), changed, removed)
	case "convert":
		to, err := sinks.ParseMode(*toMode)
		if err != nil {
			fmt.Fprintln(os.Stderr, "balancebeam convert: --to:", err)
			return exitUsage
		}
		from, err := sinks.Convert(ctx, pool, tables, to)
		if err != nil {
			slog.Error("convert failed", "error", err)
			return exitFailed
		}
		fmt.Printf("table %s: %s mode -> %s mode\n", tables.Key(), from, to)
	}
	return exitOK
}

func verifyCmd(args []string) int {
	if len(args) > 0 {
		fmt.Fprintf(os.Stderr, "balancebeam verify: unexpected arguments %q\n", args)
		return exitUsage
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	dsn, err := databaseURL(ctx)
	if err != nil {
		slog.Error("no database", "error", err)
		return exitUnverified
	}
	rep, err := verify.Run(ctx, verify.Options{DSN: dsn, Table: *table, BatchID: *batchID, MaxDiffs: *maxDiffs, History: *history})
	if err != nil {
		slog.Error("verify failed", "database", sinks.Redact(dsn), "error", err)
		return exitUnverified
	}
	if *jsonReport {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		rep.WriteText(os.Stdout)
	}
	switch rep.Outcome() {
	case verify.Equal:
		return exitOK
	case verify.Different:
		return exitDifferent
	default:
		return exitUnverified
	}
}

// chaosCmd runs the fault matrix and exits non-zero when a cell does not
// come out as the guarantee table claims.
func chaosCmd(args []string) int {
	if len(args) > 0 {
		fmt.Fprintf(os.Stderr, "balancebeam chaos: unexpected arguments %q\n", args)
		return exitUsage
	}
	self, err := os.Executable()
	if err != nil {
		slog.Error("chaos: cannot find this program to start its child processes", "error", err)
		return exitFailed
	}
	logs.QuietBeamErrors() // failing bundles are the point; each cell reports its outcome
	opts := chaos.Small
	if *chaosLarge {
		opts = chaos.Large
	}
	opts.Seed, opts.Self, opts.Log = *chaosSeed, self, os.Stderr
	opts.Scenarios = splitList(*chaosScenarios)
	opts.Runners = splitList(*chaosRunners)
	for _, m := range splitList(*chaosModes) {
		mode, err := sinks.ParseMode(m)
		if err != nil {
			fmt.Fprintln(os.Stderr, "balancebeam chaos: --modes:", err)
			return exitUsage
		}
		opts.Modes = append(opts.Modes, mode)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	start := time.Now()
	cells, err := chaos.Run(ctx, opts)
	fmt.Printf("\nchaos matrix, seed %d, %d rows over %d accounts in %d files, %s:\n\n", opts.Seed, opts.Rows, opts.Accounts, opts.Files, time.Since(start).Round(time.Second))
	chaos.WriteText(os.Stdout, cells)
	if *chaosMarkdown != "" {
		f, ferr := os.Create(*chaosMarkdown)
		if ferr == nil {
			fmt.Fprintf(f, "Seed %d, %d rows over %d accounts in %d files.\n\n", opts.Seed, opts.Rows, opts.Accounts, opts.Files)
			chaos.WriteMarkdown(f, cells)
			ferr = f.Close()
		}
		if ferr != nil {
			slog.Error("write the Markdown matrix", "error", ferr)
		}
	}
	if err != nil {
		slog.Error("chaos run stopped", "error", err)
		return exitFailed
	}
	failed := 0
	for _, c := range cells {
		if !c.OK() {
			failed++
			fmt.Printf("\nFAILED: %s / %s / %s: replay with: balancebeam chaos --seed %d --scenarios %s --modes %s --runners %s\n  note: %s\n",
				c.Scenario, c.Mode, c.Runner, opts.Seed, c.Scenario, c.Mode, c.Runner, c.Note)
		}
	}
	if failed > 0 {
		fmt.Printf("\n%d of %d cells did not come out as claimed\n", failed, len(cells))
		return exitFailed
	}
	fmt.Printf("\nall %d cells came out as the guarantee table claims\n", len(cells))
	return exitOK
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func dbCmd(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "balancebeam db: want status or stop")
		return exitUsage
	}
	sub := args[0]
	// Flags after the sub-command (db stop --state_dir DIR).
	if err := flag.CommandLine.Parse(args[1:]); err != nil {
		return exitUsage
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "balancebeam db %s: unexpected arguments %q\n", sub, flag.Args())
		return exitUsage
	}
	ctx := context.Background()
	dir := filepath.Join(*stateDir, "pg")
	switch sub {
	case "status":
		if port, ok := localpg.Running(ctx, dir); ok {
			fmt.Printf("running: %s, port %d\nconnect: psql -h 127.0.0.1 -p %d -U postgres %s\n", dir, port, port, localpg.DefaultDatabase)
			return exitOK
		}
		fmt.Printf("not running: %s\n", dir)
		return exitFailed
	case "stop":
		stopped, err := localpg.StopDir(ctx, dir)
		if err != nil {
			slog.Error("stop failed", "error", err)
			return exitFailed
		}
		if stopped {
			fmt.Printf("stopped: %s\n", dir)
		} else {
			fmt.Printf("not running: %s\n", dir)
		}
		return exitOK
	default:
		fmt.Fprintf(os.Stderr, "balancebeam db: unknown command %q (want status or stop)\n", sub)
		return exitUsage
	}
}
