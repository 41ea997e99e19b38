// Command bench measures balancebeam against a plain Go baseline and a naive
// sink, side by side on the same machine in one invocation, and writes
// BENCHMARKS.md's results and a chart of the ratios.
//
//	go run ./cmd/bench --rows 1000000,10000000 --runs 3
//
// (make bench builds the programs and runs it). For each input size it
// generates the data with txgen, starts a throwaway PostgreSQL, and runs every
// configuration as a separate process, --runs times, interleaved (one of
// each, then again), each in a fresh database. Every run's tables are checked
// against the balances txgen says a correct run must produce: a run that
// writes a wrong balance fails the benchmark instead of being timed. Wall
// time and peak RSS (getrusage of the child) are recorded; the tables show
// medians and the ratio to the baseline's median of the same invocation.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/balancebeam/balancebeam/internal/localpg"
	"github.com/balancebeam/balancebeam/internal/logs"
	"github.com/balancebeam/balancebeam/internal/txgen"
)

type options struct {
	rows      []int64
	accounts  int
	files     int
	seed      uint64
	dup       float64
	conflict  float64
	bad       float64
	runs      int
	bin       string
	work      string
	out       string
	chart     string
	raw       string
	only      []string
	skip      map[string]int64 // configuration -> the size from which it is skipped
	keepData  bool
	cmdline   string
	flushRows int
}

func main() {
	var o options
	rows := flag.String("rows", "1000000,10000000", "input sizes (data rows), comma-separated")
	flag.IntVar(&o.accounts, "accounts", 100000, "accounts")
	flag.IntVar(&o.files, "files", 4, "input files")
	flag.Uint64Var(&o.seed, "seed", 1, "txgen seed")
	flag.Float64Var(&o.dup, "dup", 0.02, "share of exact duplicate rows")
	flag.Float64Var(&o.conflict, "conflict", 0.0005, "share of conflicting duplicate rows")
	flag.Float64Var(&o.bad, "bad", 0.001, "share of rows rejected at parse")
	flag.IntVar(&o.runs, "runs", 3, "runs of each configuration (the median is reported)")
	flag.StringVar(&o.bin, "bin", "bin", "folder of the built programs (balancebeam, txgen, bench-baseline, bench-peer)")
	flag.StringVar(&o.work, "work", "", "scratch folder for data and the database (default: a new temporary folder, removed after)")
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "report to write (the results section between its markers is replaced)")
	flag.StringVar(&o.chart, "chart", "docs/bench-ratios.svg", "chart of the ratios to write")
	flag.StringVar(&o.raw, "raw", "docs/bench-results.json", "every run's figures, as JSON")
	flag.IntVar(&o.flushRows, "flush_rows", 0, "--flush_rows for balancebeam (0: its default)")
	only := flag.String("only", "", "run only these configurations (comma-separated names; the baseline always runs)")
	skip := flag.String("skip", "", "configurations to leave out from a size on, as NAME@ROWS,... (a rerun goes with its run)")
	flag.BoolVar(&o.keepData, "keep", false, "keep the scratch folder")
	flag.Parse()
	o.skip = map[string]int64{}
	for _, item := range strings.Split(*skip, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, rows, ok := strings.Cut(item, "@")
		n, err := strconv.ParseInt(rows, 10, 64)
		if !ok || err != nil {
			fatalf("--skip %q: want NAME@ROWS", item)
		}
		o.skip[name] = n
	}
	logs.Setup(os.Stderr, "info")
	for _, r := range strings.Split(*rows, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(r), 10, 64)
		if err != nil || n < int64(o.files) {
			fatalf("--rows %q: want sizes of at least --files rows", *rows)
		}
		o.rows = append(o.rows, n)
	}
	if *only != "" {
		o.only = strings.Split(*only, ",")
	}
	if o.runs < 1 {
		fatalf("--runs must be at least 1")
	}
	words := []string{"bench"}
	for _, a := range os.Args[1:] {
		if a == "" || strings.ContainsAny(a, " \t'\"*?$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'" // as a shell would need it
		}
		words = append(words, a)
	}
	o.cmdline = strings.Join(words, " ")
	if err := run(context.Background(), o); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func run(ctx context.Context, o options) error {
	for _, p := range []string{"balancebeam", "txgen", "bench-baseline", "bench-peer"} {
		if _, err := os.Stat(filepath.Join(o.bin, p)); err != nil {
			return fmt.Errorf("%s not built (make bench builds it): %w", filepath.Join(o.bin, p), err)
		}
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	o.bin = bin
	if o.work == "" {
		dir, err := os.MkdirTemp("", "balancebeam-bench-")
		if err != nil {
			return err
		}
		o.work = dir
		if !o.keepData {
			defer os.RemoveAll(dir)
		}
	}
	// The postgres account must reach the data directory.
	if err := os.MkdirAll(o.work, 0o755); err != nil {
		return err
	}
	os.Chmod(o.work, 0o755)

	res := &results{Started: time.Now().UTC(), Command: o.cmdline, Machine: machine(), LoadBefore: loadavg(), Runs: o.runs}
	pg, err := localpg.Start(ctx, localpg.Options{Dir: filepath.Join(o.work, "pg"), Database: "postgres"})
	if err != nil {
		return err
	}
	defer func() {
		if err := pg.Stop(context.Background()); err != nil {
			slog.Warn("stop PostgreSQL", "error", err)
		}
	}()
	res.Machine.Postgres, res.Machine.PostgresSettings = pgVersion(ctx, pg.DSN())
	slog.Info("throwaway PostgreSQL", "dir", pg.Dir, "port", pg.Port, "version", res.Machine.Postgres)

	for _, rows := range o.rows {
		size, err := benchSize(ctx, o, pg, rows)
		if err != nil {
			return err
		}
		res.Sizes = append(res.Sizes, *size)
	}
	res.LoadAfter = loadavg()
	res.Finished = time.Now().UTC()
	return res.write(o)
}

func benchSize(ctx context.Context, o options, pg *localpg.Cluster, rows int64) (*sizeResult, error) {
	data := filepath.Join(o.work, fmt.Sprintf("data-%d", rows))
	cfg := txgen.Config{Seed: o.seed, Rows: rows, Accounts: o.accounts, Files: o.files,
		DupShare: o.dup, ConflictShare: o.conflict, BadShare: o.bad, LateRows: 0}
	gen, sum, err := generate(ctx, o, data, cfg)
	if err != nil {
		return nil, err
	}
	exp, err := txgen.ReadExpected(filepath.Join(data, "expected", "batch.csv"))
	if err != nil {
		return nil, err
	}
	env := &runEnv{o: o, data: data, sum: sum, expected: exp}
	size := &sizeResult{Rows: rows, Accounts: o.accounts, Files: o.files, Summary: sum.Batch, Generate: gen,
		LoadBefore: loadavg()}
	var cfgs []config
	for _, c := range configurations(o) {
		from, ok := o.skip[c.name]
		if !ok && c.after != "" {
			from, ok = o.skip[c.after]
		}
		if ok && rows >= from {
			size.Skipped = append(size.Skipped, c.name)
			continue
		}
		cfgs = append(cfgs, c)
	}
	slog.Info("benchmarking", "rows", rows, "configurations", len(cfgs), "runs", o.runs)
	byName := map[string]*configResult{}
	for _, c := range cfgs {
		cr := &configResult{Name: c.name, Label: c.label, Kind: c.kind, Mode: c.mode}
		byName[c.name] = cr
		size.Configs = append(size.Configs, cr)
	}
	db := 0
	for rep := 0; rep < o.runs; rep++ {
		for _, c := range cfgs {
			if c.after != "" {
				continue // runs right after the configuration it reruns
			}
			db++
			name := fmt.Sprintf("bench_%d_%d", rows, db)
			dsn, err := freshDatabase(ctx, pg, name)
			if err != nil {
				return nil, err
			}
			if err := env.measure(ctx, c, dsn, byName[c.name]); err != nil {
				return nil, err
			}
			for _, follow := range cfgs {
				if follow.after == c.name {
					if err := env.measure(ctx, follow, dsn, byName[follow.name]); err != nil {
						return nil, err
					}
				}
			}
			if err := dropDatabase(ctx, pg, name); err != nil {
				return nil, err
			}
		}
	}
	size.LoadAfter = loadavg()
	// Every configuration that writes rejected rows wrote the same ones.
	var ref string
	for _, cr := range size.Configs {
		for _, r := range cr.Runs {
			if r.RejectsDigest == "" {
				continue
			}
			if ref == "" {
				ref = r.RejectsDigest
			} else if r.RejectsDigest != ref {
				return nil, fmt.Errorf("%d rows: %s wrote other rejected rows than the configurations before it", rows, cr.Name)
			}
		}
	}
	size.finish()
	return size, nil
}

// generate runs txgen (or reuses its output from an earlier run with the
// same configuration, when --work is kept) and reads its summary.
func generate(ctx context.Context, o options, dir string, cfg txgen.Config) (*measurement, *txgen.Summary, error) {
	args := []string{"--out", dir, "--seed", strconv.FormatUint(cfg.Seed, 10), "--rows", strconv.FormatInt(cfg.Rows, 10),
		"--accounts", strconv.Itoa(cfg.Accounts), "--files", strconv.Itoa(cfg.Files),
		"--dup", fmt.Sprint(cfg.DupShare), "--conflict", fmt.Sprint(cfg.ConflictShare), "--bad", fmt.Sprint(cfg.BadShare),
		"--late_rows", "0"}
	if sum, err := readSummary(dir); err == nil && sameConfig(sum.Config, cfg) {
		slog.Info("reusing generated data", "dir", dir)
		return nil, sum, nil
	}
	os.RemoveAll(dir)
	slog.Info("generating", "rows", cfg.Rows, "dir", dir)
	m, _, err := runMeasured(ctx, filepath.Join(o.bin, "txgen"), args, nil)
	if err != nil {
		return nil, nil, err
	}
	sum, err := readSummary(dir)
	return m, sum, err
}

func sameConfig(a, b txgen.Config) bool {
	a.Start, b.Start = time.Time{}, time.Time{}
	return a == b
}

func readSummary(dir string) (*txgen.Summary, error) {
	b, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		return nil, err
	}
	var s txgen.Summary
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("summary.json: %w", err)
	}
	return &s, nil
}

// config is one benchmarked configuration.
type config struct {
	name, label string
	kind        string // "baseline", "balancebeam", "rerun", "naive", "sink"
	mode        string // balancebeam's --mode
	// after names the configuration whose database this one reruns in.
	after string
	// recheck: a rerun with --recheck, through the pipeline again.
	recheck bool
	args    func(e *runEnv, dsn string) (prog string, args []string)
}

func configurations(o options) []config {
	input := func(e *runEnv) string { return filepath.Join(e.data, "*.csv") }
	bb := func(runner, mode string, extra ...string) func(*runEnv, string) (string, []string) {
		return func(e *runEnv, dsn string) (string, []string) {
			args := []string{"--input", input(e), "--database", dsn, "--runner=" + runner, "--mode=" + mode, "--progress=0",
				"--max_rejects=5%", "--json", "--log_level=warn"}
			args = append(args, extra...)
			if o.flushRows > 0 {
				args = append(args, "--flush_rows", strconv.Itoa(o.flushRows))
			}
			return filepath.Join(e.o.bin, "balancebeam"), args
		}
	}
	all := []config{
		{name: "baseline", label: "baseline: plain Go, one goroutine, COPY + one guarded merge", kind: "baseline",
			args: func(e *runEnv, dsn string) (string, []string) {
				return filepath.Join(e.o.bin, "bench-baseline"), []string{"--input", input(e), "--database", dsn}
			}},
		{name: "direct", label: "balancebeam, direct runner (snapshot mode)", kind: "balancebeam", mode: "snapshot", args: bb("direct", "snapshot")},
		{name: "rerun", label: "balancebeam, direct runner, snapshot: rerun of the committed batch", kind: "rerun", mode: "snapshot", after: "direct", args: bb("direct", "snapshot")},
		{name: "rerun-recheck", label: "balancebeam, direct runner, snapshot: rerun with --recheck (the pipeline again)", kind: "rerun", mode: "snapshot", after: "direct", recheck: true, args: bb("direct", "snapshot", "--recheck")},
		{name: "prism", label: "balancebeam, Prism (snapshot mode)", kind: "balancebeam", mode: "snapshot", args: bb("prism", "snapshot")},
		{name: "lww", label: "balancebeam, direct runner, lww mode (unguarded merge)", kind: "balancebeam", mode: "lww", args: bb("direct", "lww")},
		{name: "ledger", label: "balancebeam, direct runner, ledger mode", kind: "balancebeam", mode: "ledger", args: bb("direct", "ledger")},
		{name: "ledger-rerun", label: "balancebeam, direct runner, ledger: rerun of the committed batch", kind: "rerun", mode: "ledger", after: "ledger", args: bb("direct", "ledger")},
		{name: "ledger-recheck", label: "balancebeam, direct runner, ledger: rerun with --recheck (the pipeline again)", kind: "rerun", mode: "ledger", after: "ledger", recheck: true, args: bb("direct", "ledger", "--recheck")},
		{name: "naive", label: "naive sink (one upsert round trip per account), direct runner", kind: "naive",
			args: func(e *runEnv, dsn string) (string, []string) {
				return filepath.Join(e.o.bin, "bench-peer"), []string{"naive", "--input", input(e), "--database", dsn, "--runner=direct"}
			}},
		{name: "sink-guarded", label: "balancebeam's writer, snapshot mode: COPY + guarded merge", kind: "sink", args: sinkArgs("guarded", 3)},
		{name: "sink-lww", label: "balancebeam's writer, lww mode: COPY + unguarded merge", kind: "sink", args: sinkArgs("lww", 3)},
		{name: "sink-naive", label: "naive: one upsert round trip per account, each its own transaction", kind: "sink", args: sinkArgs("naive", 1)},
	}
	if len(o.only) == 0 {
		return all
	}
	// The baseline always runs; a rerun brings the run it reruns.
	want := map[string]bool{"baseline": true}
	for _, c := range all {
		if slices.Contains(o.only, c.name) {
			want[c.name] = true
			if c.after != "" {
				want[c.after] = true
			}
		}
	}
	var out []config
	for _, c := range all {
		if want[c.name] {
			out = append(out, c)
		}
	}
	return out
}

func sinkArgs(kind string, rounds int) func(*runEnv, string) (string, []string) {
	return func(e *runEnv, dsn string) (string, []string) {
		return filepath.Join(e.o.bin, "bench-peer"), []string{"sink", "--sink=" + kind, "--rounds", strconv.Itoa(rounds), "--database", dsn,
			"--expected", filepath.Join(e.data, "expected", "batch.csv")}
	}
}
