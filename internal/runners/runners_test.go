package runners

import (
	"bytes"
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core"
	"github.com/jackc/pgx/v5"

	"github.com/balancebeam/balancebeam/internal/driver"
	"github.com/balancebeam/balancebeam/internal/logs"
	"github.com/balancebeam/balancebeam/internal/pgtest"
)

// tmpRoot holds what the tests build and the job servers' logs; it is
// removed at the end unless a test failed.
var tmpRoot string

func TestMain(m *testing.M) {
	flag.Parse()
	beam.Init()
	logs.Setup(os.Stderr, "warn")
	var err error
	if tmpRoot, err = os.MkdirTemp("", "balancebeam-runners-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Temporary files of this process and its job servers go here, among
	// them the empty file Beam 2.62 creates (and leaves) for every loopback
	// job. The postgres account must reach pgtest's folder inside.
	os.Chmod(tmpRoot, 0o755)
	os.Setenv("TMPDIR", tmpRoot)
	code := pgtest.Main(m)
	if code == 0 {
		os.RemoveAll(tmpRoot)
	} else {
		fmt.Fprintf(os.Stderr, "runners: job server logs kept in %s\n", tmpRoot)
	}
	os.Exit(code)
}

const fixedAt = "2026-12-02T06:00:00Z"

func fixedClock() time.Time {
	at, _ := time.Parse(time.RFC3339, fixedAt)
	return at
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// setFlags sets Beam's runner flags (package globals such as
// jobopts.Endpoint) for one test and restores them after it.
func setFlags(t *testing.T, kv map[string]string) {
	t.Helper()
	for name, v := range kv {
		f := flag.Lookup(name)
		if f == nil {
			t.Fatalf("no flag --%s", name)
		}
		old := f.Value.String()
		if err := flag.Set(name, v); err != nil {
			t.Fatalf("--%s=%s: %v", name, v, err)
		}
		t.Cleanup(func() { flag.Set(name, old) })
	}
}

// dumpTables returns every table of the database's public schema as
// PostgreSQL's COPY text, every column as the server prints it, rows in the
// order of all their columns. In the batches table the run's report leaves
// out the two fields that differ by runner: its elapsed time and the
// runner's name.
func dumpTables(t *testing.T, dsn string) map[string]string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SET TimeZone = 'UTC'"); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = 'public' ORDER BY table_name, ordinal_position`)
	if err != nil {
		t.Fatal(err)
	}
	columns := map[string][]string{}
	var tables []string
	for rows.Next() {
		var table, column string
		if err := rows.Scan(&table, &column); err != nil {
			t.Fatal(err)
		}
		if len(columns[table]) == 0 {
			tables = append(tables, table)
		}
		expr := pgx.Identifier{column}.Sanitize()
		if table == "batches" && column == "counts" {
			expr = `counts - 'elapsed_ns' - 'runner'`
		}
		columns[table] = append(columns[table], expr)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"accounts", "batches", "batch_shards", "rejected_rows"} {
		if len(columns[want]) == 0 {
			t.Fatalf("no table %s among %v", want, tables)
		}
	}
	out := map[string]string{}
	for _, table := range tables {
		cols := strings.Join(columns[table], ", ")
		order := make([]string, len(columns[table]))
		for i := range order {
			order[i] = strconv.Itoa(i + 1)
		}
		q := "SELECT " + cols + " FROM " + pgx.Identifier{table}.Sanitize() + " ORDER BY " + strings.Join(order, ", ")
		var buf bytes.Buffer
		if _, err := conn.PgConn().CopyTo(ctx, &buf, "COPY ("+q+") TO STDOUT"); err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		out[table] = buf.String()
	}
	return out
}

// expectedAccounts renders a testdata/expected file (account_id, balance,
// txn_count) as the accounts dump's first, second and fifth columns.
func expectedBalances(t *testing.T, root, name string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "testdata/expected", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range recs[1:] {
		fmt.Fprintf(&b, "%s\t%s\t%s\n", r[0], r[1], r[2])
	}
	return b.String()
}

func balancesOf(accounts string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSuffix(accounts, "\n"), "\n") {
		c := strings.Split(line, "\t")
		if len(c) == 6 {
			fmt.Fprintf(&b, "%s\t%s\t%s\n", c[0], c[1], c[4])
		}
	}
	return b.String()
}

// outcome is the tables after each core scenario, keyed "scenario/table".
type outcome map[string]string

// coreScenarios runs the core scenarios on a runner, each on a fresh
// database, and returns the tables after each: a first run of day 1, a
// rerun of it (a no-op), the late batch (day 1 then day 1 with day 2), and
// day 1 with day 2 on 1 and on 4 shards. The runner's flags must be set.
func coreScenarios(t *testing.T, runner string) (outcome, time.Duration) {
	t.Helper()
	root := repoRoot(t)
	day1 := filepath.Join(root, "testdata/day1/*.csv")
	day2 := filepath.Join(root, "testdata/day2/*.csv")
	out := outcome{}
	var elapsed time.Duration
	run := func(dsn string, opts driver.Options) *driver.Report {
		t.Helper()
		opts.Runner, opts.DSN = runner, dsn
		if opts.Clock == nil {
			opts.Clock = fixedClock
		}
		opts.MaxRejects = driver.Threshold{Count: 3} // the fixtures' three bad rows
		start := time.Now()
		rep, err := driver.Run(context.Background(), opts)
		elapsed += time.Since(start)
		if err != nil {
			t.Fatalf("%s: run %v: %v", runner, opts.Inputs, err)
		}
		return rep
	}
	keep := func(scenario string, tables map[string]string) {
		for table, text := range tables {
			out[scenario+"/"+table] = text
		}
	}

	dsn := pgtest.New(t)
	first := run(dsn, driver.Options{Inputs: []string{day1}})
	firstTables := dumpTables(t, dsn)
	keep("first run", firstTables)
	if got, want := balancesOf(firstTables["accounts"]), expectedBalances(t, root, "day1.csv"); got != want {
		t.Errorf("%s: first run balances\n got %q\nwant %q", runner, got, want)
	}
	// The rerun names the files in another order, later in the day, and
	// runs the committed batch through the pipeline again (--recheck).
	rerun := run(dsn, driver.Options{Inputs: []string{filepath.Join(root, "testdata/day1/b.csv"), filepath.Join(root, "testdata/day1/a.csv")},
		Clock: func() time.Time { return fixedClock().Add(5 * time.Hour) }, Recheck: true})
	rerunTables := dumpTables(t, dsn)
	keep("rerun", rerunTables)
	if rerun.BatchID != first.BatchID || rerun.RowsUpserted != 0 || rerun.RowsStale != 6 {
		t.Errorf("%s: rerun: batch %d (first %d), %d upserted, %d stale; want the same batch, 0 and 6", runner, rerun.BatchID, first.BatchID, rerun.RowsUpserted, rerun.RowsStale)
	}
	for _, table := range []string{"accounts", "rejected_rows"} {
		if rerunTables[table] != firstTables[table] {
			t.Errorf("%s: the rerun changed %s:\n%s\nthen\n%s", runner, table, firstTables[table], rerunTables[table])
		}
	}

	dsn = pgtest.New(t)
	run(dsn, driver.Options{Inputs: []string{day1}})
	late := run(dsn, driver.Options{Inputs: []string{day1 + "," + day2}})
	lateTables := dumpTables(t, dsn)
	keep("late batch", lateTables)
	if !late.NewBatch || late.RowsRead != 20 || late.RowsApplied != 14 || late.Duplicates != 3 || late.Rejected != 3 {
		t.Errorf("%s: late batch report %+v", runner, late)
	}
	if got, want := balancesOf(lateTables["accounts"]), expectedBalances(t, root, "day1+day2.csv"); got != want {
		t.Errorf("%s: late batch balances\n got %q\nwant %q", runner, got, want)
	}

	var sharded []string
	for _, shards := range []int{1, 4} {
		dsn := pgtest.New(t)
		run(dsn, driver.Options{Inputs: []string{day1 + "," + day2}, Shards: shards, FlushRows: 2})
		tables := dumpTables(t, dsn)
		keep(fmt.Sprintf("shards %d", shards), tables)
		sharded = append(sharded, tables["accounts"])
	}
	if sharded[0] != sharded[1] {
		t.Errorf("%s: accounts differ between 1 and 4 shards:\n%s\n%s", runner, sharded[0], sharded[1])
	}
	return out, elapsed
}

var (
	baselineMu  sync.Mutex
	baseline    outcome
	baselineDur time.Duration
)

// directBaseline is the outcome of the core scenarios on the direct
// runner, computed once.
func directBaseline(t *testing.T) outcome {
	t.Helper()
	baselineMu.Lock()
	defer baselineMu.Unlock()
	if baseline == nil {
		out, d := coreScenarios(t, "direct")
		if t.Failed() {
			t.FailNow()
		}
		baseline, baselineDur = out, d
		t.Logf("core scenarios on the direct runner: 6 runs in %s", d.Round(time.Millisecond))
	}
	return baseline
}

// sameAsDirect compares every table after every scenario with the direct
// runner's, byte for byte.
func sameAsDirect(t *testing.T, name string, got outcome) {
	t.Helper()
	want := directBaseline(t)
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if got[k] != want[k] {
			t.Errorf("%s: %s differs from the direct runner's:\n%s", name, k, lineDiff(want[k], got[k]))
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d dumps, the direct runner has %d", name, len(got), len(want))
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "  line %d\n    direct: %q\n    got:    %q\n", i+1, wl, gl)
		}
	}
	return b.String()
}

// startPrism starts the standalone Prism job server of scripts/prism-jobserver.sh.
func startPrism(t *testing.T) *JobServer {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	s, err := Start(context.Background(), Spec{
		Name: "prism",
		Command: []string{filepath.Join(root, "scripts/prism-jobserver.sh"), "run",
			"--log_kind=text", "--log_level=warn", "--serve_http=false"},
		PortFlag: "--job_port",
		Dir:      root,
		Env:      []string{"PRISM_BIN=" + filepath.Join(tmpRoot, "prism")},
		Log:      filepath.Join(tmpRoot, "prism-"+filepath.Base(dir)+".log"),
		Ready:    3 * time.Minute, // the first time includes building bin/prism
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

// TestPrismInProcess runs the core scenarios on the default runner, Prism
// started inside the launcher (--runner=prism).
func TestPrismInProcess(t *testing.T) {
	directBaseline(t)
	// The prism runner starts its job server when --endpoint is empty and
	// leaves the flag set to it; it is restored afterwards.
	setFlags(t, map[string]string{"endpoint": "", "environment_type": "LOOPBACK"})
	got, d := coreScenarios(t, "prism")
	t.Logf("core scenarios on Prism in-process: 6 runs in %s", d.Round(time.Millisecond))
	sameAsDirect(t, "prism in-process", got)
}

// TestPrismJobServer runs the core scenarios against a standalone Prism job
// server, submitted as a user would: --runner=universal
// --endpoint=localhost:PORT --environment_type=LOOPBACK.
func TestPrismJobServer(t *testing.T) {
	directBaseline(t)
	s := startPrism(t)
	setFlags(t, map[string]string{"endpoint": s.Endpoint, "environment_type": "LOOPBACK"})
	got, d := coreScenarios(t, "universal")
	t.Logf("core scenarios on the Prism job server: 6 runs in %s", d.Round(time.Millisecond))
	sameAsDirect(t, "prism job server", got)
	if done, err := s.Exited(); done {
		t.Errorf("the Prism job server exited during the tests (%v); its log:\n%s", err, s.Tail(40))
	}
}

// TestFlink runs the core scenarios on Beam's Flink job server with an
// embedded Flink cluster (--flink-master=[local]), parallelism 2, submitted
// with --runner=flink --endpoint=localhost:PORT --environment_type=LOOPBACK.
// The job server comes from Maven Central through scripts/flink-jobserver.sh;
// without Java or Maven this fails and says so.
func TestFlink(t *testing.T) {
	directBaseline(t)
	root := repoRoot(t)
	log := filepath.Join(tmpRoot, "flink-jobserver.log")
	start := time.Now()
	cp, err := RunScript(context.Background(), root, 15*time.Minute, log, "scripts/flink-jobserver.sh", "fetch")
	if err != nil {
		t.Fatalf("the Flink job server could not be assembled: %v", err)
	}
	t.Logf("flink job server classpath %s ready in %s", cp, time.Since(start).Round(time.Millisecond))
	// The job server is the release of the Go SDK that submits to it.
	classpath, err := os.ReadFile(cp)
	if err != nil {
		t.Fatal(err)
	}
	for _, jar := range []string{"beam-runners-flink-1.19-" + core.SdkVersion + ".jar", "beam-runners-java-job-service-" + core.SdkVersion + ".jar"} {
		if !bytes.Contains(classpath, []byte("/"+jar)) {
			t.Fatalf("the Flink job server's classpath lacks %s (the Go SDK is %s)", jar, core.SdkVersion)
		}
	}
	start = time.Now()
	artifacts := filepath.Join(tmpRoot, "flink-artifacts")
	s, err := Start(context.Background(), Spec{
		Name:     "flink",
		Command:  []string{filepath.Join(root, "scripts/flink-jobserver.sh"), "run", "--artifacts-dir=" + artifacts},
		PortFlag: "--job-port",
		Dir:      root,
		Log:      log,
		Ready:    3 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	t.Logf("flink job server up on %s in %s", s.Endpoint, time.Since(start).Round(time.Millisecond))

	setFlags(t, map[string]string{"endpoint": s.Endpoint, "environment_type": "LOOPBACK", "parallelism": "2"})
	got, d := coreScenarios(t, "flink")
	t.Logf("core scenarios on Flink (embedded cluster, parallelism 2): 6 runs in %s", d.Round(time.Millisecond))
	sameAsDirect(t, "flink", got)
	// The job server ran the jobs with the parallelism asked for.
	if data, err := os.ReadFile(log); err != nil || !bytes.Contains(data, []byte("(2/2)")) {
		t.Errorf("the Flink job server's log shows no task of parallelism 2 (%v); its end:\n%s", err, s.Tail(40))
	}
	if done, err := s.Exited(); done {
		t.Errorf("the Flink job server exited during the tests (%v); its log:\n%s", err, s.Tail(40))
	}
}

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// programBinary builds cmd/balancebeam once for the test binary, as
// `make worker` builds a Dataflow worker: linux/amd64, no cgo, -trimpath.
func programBinary(t *testing.T) string {
	t.Helper()
	binaryOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		root, err := RepoRoot()
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(tmpRoot, "balancebeam")
		cmd := exec.Command(goTool, "build", "-trimpath", "-o", binaryPath, "./cmd/balancebeam")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binaryErr = fmt.Errorf("go build ./cmd/balancebeam: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// TestWorkerProcesses runs the core scenarios with every worker a process
// of its own, started from the staged cmd/balancebeam binary the way a
// remote machine starts one (see ProcessPool), against the Prism job server
// with --environment_type=EXTERNAL. A DoFn that needs anything the launcher
// set up in memory, a type or function registered late, or a field that is
// not serialised fails here, as it would on a cluster.
func TestWorkerProcesses(t *testing.T) {
	directBaseline(t)
	bin := programBinary(t)
	s := startPrism(t)
	pool, err := StartProcessPool(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Stop)
	setFlags(t, map[string]string{"endpoint": s.Endpoint, "environment_type": "EXTERNAL",
		"environment_config": pool.Endpoint(), "worker_binary": bin})
	got, d := coreScenarios(t, "universal")
	t.Logf("core scenarios on the Prism job server with worker processes: 6 runs in %s", d.Round(time.Millisecond))
	workers := pool.Workers()
	if t.Failed() {
		for _, w := range workers {
			t.Logf("worker %s log (%s):\n%s", w.ID, w.Log, TailFile(w.Log, 20))
		}
	}
	sameAsDirect(t, "worker processes", got)
	if len(workers) < 6 {
		t.Errorf("%d worker processes for 6 jobs: the jobs did not run in them", len(workers))
	}
	for _, w := range workers {
		if !strings.HasSuffix(w.Args[0], "/worker") || !contains(w.Args, "--worker=true") {
			t.Errorf("worker %s ran %v", w.ID, w.Args)
		}
		for _, kv := range w.Env {
			if strings.HasPrefix(kv, "PGPASSWORD=") || strings.HasPrefix(kv, "DATABASE_URL=") {
				t.Errorf("worker %s has the launcher's %s", w.ID, kv[:strings.Index(kv, "=")])
			}
		}
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
