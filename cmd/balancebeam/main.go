// Command balancebeam reads files of financial transactions, deduplicates
// them, computes per-account balances and writes them to PostgreSQL so that
// retries, reruns, late files and any parallelism never leave a wrong
// balance.
//
//	balancebeam --input 'testdata/day1/*.csv' --database postgres://...
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
	"strings"
	"syscall"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners" // --runner
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	"github.com/balancebeam/balancebeam/internal/driver"
	"github.com/balancebeam/balancebeam/internal/localpg"
	"github.com/balancebeam/balancebeam/internal/logs"
	"github.com/balancebeam/balancebeam/sinks"
	"github.com/balancebeam/balancebeam/transforms"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitTooManyRejs = 3
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

var (
	inputs       stringList
	database     = flag.String("database", "", "PostgreSQL URL (default $DATABASE_URL, else the embedded database under --state_dir)")
	passwordFile = flag.String("database_password_file", "", "file holding the database password, read by each sink worker at start-up (for remote runners)")
	table        = flag.String("table", sinks.DefaultAccountsTable, "accounts table, optionally schema-qualified")
	shards       = flag.Int("shards", driver.DefaultShards, "number of sink shards; each account is written by exactly one")
	batchID      = flag.Int64("batch_id", 0, "force this batch id (an error if it belongs to other inputs)")
	maxRejects   = flag.String("max_rejects", "0", "rejected rows allowed before the run exits non-zero: a count or a percentage such as 0.5%")
	flushRows    = flag.Int("flush_rows", sinks.DefaultFlushRows, "rows per sink flush (one transaction)")
	buckets      = flag.Int("dedup_buckets", transforms.DefaultParseConfig.Buckets, "dedup buckets transaction ids are spread over")
	stateDir     = flag.String("state_dir", ".balancebeam", "folder of the embedded database")
	logLevel     = flag.String("log_level", "info", "debug, info, warn or error")
	jsonReport   = flag.Bool("json", false, "print the run report as JSON")
	progressInt  = flag.Duration("progress", 10*time.Second, "log progress at this interval while the pipeline runs (0: never)")
)

func init() {
	flag.Var(&inputs, "input", "input files or globs, comma-separated or repeated")
}

func usage() {
	out := flag.CommandLine.Output()
	fmt.Fprintf(out, `balancebeam: transaction files to guarded PostgreSQL balances, on any Beam runner.

Usage:
  balancebeam [run] --input 'day1/*.csv' [--database postgres://...] [flags]
  balancebeam db status|stop [--state_dir DIR]

Flags of balancebeam (Beam's own flags, such as --runner, are accepted too):
`)
	for _, name := range []string{"input", "database", "database_password_file", "table", "shards", "batch_id",
		"max_rejects", "flush_rows", "dedup_buckets", "state_dir", "json", "progress", "log_level", "runner"} {
		if f := flag.Lookup(name); f != nil {
			fmt.Fprintf(out, "  --%s\t%s (default %q)\n", f.Name, f.Usage, f.DefValue)
		}
	}
}

func main() {
	flag.Usage = usage
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		os.Exit(runCmd(args))
	case "db":
		os.Exit(dbCmd(args))
	case "help":
		usage()
		os.Exit(exitOK)
	default:
		fmt.Fprintf(os.Stderr, "balancebeam: unknown command %q (want run or db)\n", cmd)
		os.Exit(exitUsage)
	}
}

func parseFlags(args []string) bool {
	if err := flag.CommandLine.Parse(args); err != nil {
		return false
	}
	if err := logs.Setup(os.Stderr, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "balancebeam:", err)
		return false
	}
	return true
}

func runCmd(args []string) int {
	if !parseFlags(args) {
		return exitUsage
	}
	// Right after flags: a worker binary started by a runner becomes a
	// worker here and never returns.
	beam.Init()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "balancebeam: unexpected arguments %q (inputs go in --input)\n", flag.Args())
		return exitUsage
	}
	threshold, err := driver.ParseThreshold(*maxRejects)
	if err != nil {
		fmt.Fprintln(os.Stderr, "balancebeam: --max_rejects:", err)
		return exitUsage
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	dsn := *database
	if dsn == "" {
		dsn = os.Getenv("DATABASE_URL")
	}
	if dsn == "" {
		c, err := localpg.Start(ctx, localpg.Options{Dir: filepath.Join(*stateDir, "pg"), Durable: true})
		if err != nil {
			slog.Error("no --database given and the embedded PostgreSQL did not start", "error", err)
			return exitFailed
		}
		verb := "reusing"
		if c.Started {
			verb = "started"
		}
		slog.Info(verb+" the embedded PostgreSQL", "dir", c.Dir, "port", c.Port, "connect", c.PsqlCommand(),
			"stop", "balancebeam db stop --state_dir "+*stateDir)
		dsn = c.DSN()
	}

	runner := *runners.Runner
	if runner == "" {
		runner = "prism"
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
	rep, err := driver.Run(ctx, driver.Options{
		Inputs:       inputs,
		DSN:          dsn,
		PasswordFile: *passwordFile,
		Table:        *table,
		Shards:       *shards,
		BatchID:      *batchID,
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

func dbCmd(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "balancebeam db: want status or stop")
		return exitUsage
	}
	sub := args[0]
	if !parseFlags(args[1:]) {
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
