package runners

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/core"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/coder"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/graphx"
	v1pb "github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/graphx/v1"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/util/protox"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/balancebeam/balancebeam/internal/driver"
	"github.com/balancebeam/balancebeam/sinks"
	"github.com/balancebeam/balancebeam/transforms"
)

// TestDataflowDryRun runs the program as a user submitting to Dataflow
// would, with --dry_run and placeholder project, region and staging
// location: Beam translates the job and prints it instead of submitting it,
// so no network is needed. The test reads the printed pipeline and job and
// checks that they hold our steps, that every DoFn and combiner decodes
// from the job as a Dataflow worker decodes it, with its configuration
// intact, and that the database password appears nowhere.
func TestDataflowDryRun(t *testing.T) {
	root := repoRoot(t)
	bin := programBinary(t)
	const (
		project  = "balancebeam-ci"
		region   = "europe-west1"
		staging  = "gs://balancebeam-ci-staging/dataflow"
		password = "Dry-Run-Secret-4242"
		pwFile   = "/secrets/balancebeam/pg-password"
	)
	day1 := filepath.Join(root, "testdata/day1/*.csv")
	day2 := filepath.Join(root, "testdata/day2/*.csv")
	cmd := exec.Command(bin,
		"--input", day1+","+day2,
		"--runner=dataflow", "--dry_run",
		"--project="+project, "--region="+region, "--staging_location="+staging,
		"--max_num_workers=4", "--shards=8", "--flush_rows=5000",
		"--database=postgres://balancebeam:"+password+"@10.20.0.3:5432/ledger?sslmode=require",
		"--database_password_file="+pwFile,
	)
	cmd.Env = remoteEnv()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dry run: %v\nstderr:\n%s\nstdout (end):\n%s", err, stderr.String(), tail(stdout.String(), 2000))
	}
	out := stdout.String()
	if strings.Contains(out, password) || strings.Contains(stderr.String(), password) {
		t.Error("the database password is in the translated job or the program's output")
	}
	if !strings.Contains(out, "dry run on dataflow: the job was translated and printed, not submitted") {
		t.Errorf("no dry-run report:\n%s", tail(out, 500))
	}

	model, job := parseDryRun(t, out)

	// Our composite steps, as Beam names them.
	names := map[string]bool{}
	for _, tr := range model.GetComponents().GetTransforms() {
		names[tr.GetUniqueName()] = true
	}
	for _, step := range []string{"Parse", "Dedup", "Sum", "WriteBalances", "WriteRejects"} {
		found := false
		for n := range names {
			if n == step || strings.HasPrefix(n, step+"/") {
				found = true
			}
		}
		if !found {
			t.Errorf("no step %s in the translated job; its transforms: %v", step, keys(names))
		}
	}

	// Every DoFn and combiner decodes as a worker decodes it.
	fns := decodeUserFns(t, model)
	wantDSN := "postgres://balancebeam@10.20.0.3:5432/ledger?sslmode=require"
	checkFn(t, fns, "ParseFileFn", func(fn *transforms.ParseFileFn) error {
		if fn.Buckets != 64 || fn.BlockBytes != transforms.DefaultParseConfig.BlockBytes {
			return fmt.Errorf("buckets %d, block bytes %d", fn.Buckets, fn.BlockBytes)
		}
		return nil
	})
	checkFn(t, fns, "DedupFn", func(fn *transforms.DedupFn) error {
		if fn.Shards != 8 || len(fn.Files) != 3 || !filepath.IsAbs(fn.Files[0]) {
			return fmt.Errorf("shards %d, files %v", fn.Shards, fn.Files)
		}
		return nil
	})
	checkFn(t, fns, "SumTotalsFn", func(fn *transforms.SumTotalsFn) error { return nil })
	checkFn(t, fns, "BalanceWriterFn", func(fn *sinks.BalanceWriterFn) error {
		if fn.Conn.DSN != wantDSN || fn.Conn.PasswordFile != pwFile || fn.Buckets != 64 || fn.FlushRows != 5000 ||
			fn.Tables.Accounts != "accounts" || fn.BatchID != 0 || fn.PinnedAtMicros == 0 {
			return fmt.Errorf("conn %+v, buckets %d, flush rows %d, tables %+v, batch %d, pinned %d",
				fn.Conn, fn.Buckets, fn.FlushRows, fn.Tables, fn.BatchID, fn.PinnedAtMicros)
		}
		return nil
	})
	checkFn(t, fns, "RejectWriterFn", func(fn *sinks.RejectWriterFn) error {
		if fn.Conn.DSN != wantDSN || fn.Conn.PasswordFile != pwFile || fn.FlushRows != 5000 {
			return fmt.Errorf("%+v", *fn)
		}
		return nil
	})

	// The coder of every PCollection decodes, our byte-copy coders among them.
	var ids []string
	for _, pc := range model.GetComponents().GetPcollections() {
		ids = append(ids, pc.GetCoderId())
	}
	coders, err := graphx.NewCoderUnmarshaller(model.GetComponents().GetCoders()).Coders(ids)
	if err != nil {
		t.Fatalf("the job's coders do not decode: %v", err)
	}
	custom := map[reflect.Type]bool{}
	for _, c := range coders {
		customTypes(c, custom)
	}
	for _, want := range []reflect.Type{reflect.TypeOf(transforms.Block{}), reflect.TypeOf(transforms.Totals{})} {
		if !custom[want] {
			t.Errorf("no custom coder of %v in the job (custom coders: %v)", want, custom)
		}
	}

	// The workers run the Go SDK container of the SDK's own version.
	envs := model.GetComponents().GetEnvironments()
	if len(envs) != 1 {
		t.Errorf("%d environments, want 1", len(envs))
	}
	for id, env := range envs {
		var dp pipepb.DockerPayload
		if env.GetUrn() != graphx.URNEnvDocker || proto.Unmarshal(env.GetPayload(), &dp) != nil ||
			!strings.HasSuffix(dp.GetContainerImage(), "/beam_go_sdk:"+core.SdkVersion) {
			t.Errorf("environment %s: %s %q, want the docker image beam_go_sdk:%s", id, env.GetUrn(), dp.GetContainerImage(), core.SdkVersion)
		}
	}

	// The Dataflow job: project, a batch job, the staged worker binary and
	// pipeline, runner v2, the worker cap.
	if job.ProjectID != project || job.Type != "JOB_TYPE_BATCH" {
		t.Errorf("job project %q type %q", job.ProjectID, job.Type)
	}
	opts := job.Environment.SdkPipelineOptions.Options
	if opts.Region != region || !strings.HasPrefix(opts.PipelineURL, staging+"/") || !strings.HasSuffix(opts.PipelineURL, "/model") {
		t.Errorf("job options: region %q pipeline %q", opts.Region, opts.PipelineURL)
	}
	if !contains(job.Environment.Experiments, "use_runner_v2") {
		t.Errorf("experiments %v lack use_runner_v2", job.Environment.Experiments)
	}
	if len(job.Environment.WorkerPools) != 1 {
		t.Fatalf("%d worker pools", len(job.Environment.WorkerPools))
	}
	pool := job.Environment.WorkerPools[0]
	if pool.Autoscaling.MaxNumWorkers != 4 {
		t.Errorf("max workers %d, want 4", pool.Autoscaling.MaxNumWorkers)
	}
	if len(pool.Packages) == 0 || pool.Packages[0].Name != "worker" || !strings.HasPrefix(pool.Packages[0].Location, staging+"/") {
		t.Errorf("worker packages %+v: want the worker binary staged under %s", pool.Packages, staging)
	}
}

// TestDataflowNeedsADatabase: Dataflow's workers cannot reach the embedded
// database, so a Dataflow run without --database (or DATABASE_URL) is a
// usage error that says why, before anything starts.
func TestDataflowNeedsADatabase(t *testing.T) {
	root := repoRoot(t)
	cmd := exec.Command(programBinary(t), "--input", filepath.Join(root, "testdata/day1/*.csv"),
		"--runner=dataflow", "--dry_run", "--project=p", "--region=europe-west1", "--staging_location=gs://b/s",
		"--state_dir", t.TempDir())
	cmd.Env = remoteEnv()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--runner=dataflow needs --database") {
		t.Fatalf("exit %v, output:\n%s", err, out)
	}
}

// dataflowJob is the part of the printed Dataflow job the test reads.
type dataflowJob struct {
	ProjectID   string `json:"projectId"`
	Type        string `json:"type"`
	Environment struct {
		Experiments        []string `json:"experiments"`
		SdkPipelineOptions struct {
			Options struct {
				PipelineURL string `json:"pipelineUrl"`
				Region      string `json:"region"`
			} `json:"options"`
		} `json:"sdkPipelineOptions"`
		WorkerPools []struct {
			Autoscaling struct {
				MaxNumWorkers int64 `json:"maxNumWorkers"`
			} `json:"autoscalingSettings"`
			Packages []struct {
				Name     string `json:"name"`
				Location string `json:"location"`
			} `json:"packages"`
		} `json:"workerPools"`
	} `json:"environment"`
}

// parseDryRun reads the dry run's output: after "Dry-run: not submitting
// job!" Beam prints the pipeline in protobuf text format on one line, then
// the Dataflow job as indented JSON.
func parseDryRun(t *testing.T, out string) (*pipepb.Pipeline, dataflowJob) {
	t.Helper()
	_, rest, ok := strings.Cut(out, "Dry-run: not submitting job!\n")
	if !ok {
		t.Fatalf("no dry-run output:\n%s", tail(out, 2000))
	}
	modelText, rest, _ := strings.Cut(rest, "\n")
	var model pipepb.Pipeline
	if err := prototext.Unmarshal([]byte(modelText), &model); err != nil {
		t.Fatalf("the printed pipeline does not parse: %v", err)
	}
	start := strings.Index(rest, "{\n")
	end := strings.Index(rest, "\n}\n")
	if start < 0 || end < start {
		t.Fatalf("no Dataflow job in the output:\n%s", tail(rest, 2000))
	}
	var job dataflowJob
	if err := json.Unmarshal([]byte(rest[start:end+2]), &job); err != nil {
		t.Fatalf("the printed job does not parse: %v", err)
	}
	return &model, job
}

// decodeUserFns decodes the Go DoFns and combiners of a pipeline the way
// the SDK harness does on a worker (exec.UnmarshalPlan): the payload of a
// ParDo's DoFn or of a CombinePerKey's CombineFn is a Go transform payload
// holding the encoded edge. It returns the receivers by type name.
func decodeUserFns(t *testing.T, p *pipepb.Pipeline) map[string][]any {
	t.Helper()
	out := map[string][]any{}
	for id, tr := range p.GetComponents().GetTransforms() {
		var spec *pipepb.FunctionSpec
		switch tr.GetSpec().GetUrn() {
		case graphx.URNParDo:
			var pardo pipepb.ParDoPayload
			if err := proto.Unmarshal(tr.GetSpec().GetPayload(), &pardo); err != nil {
				t.Fatalf("%s: ParDo payload: %v", tr.GetUniqueName(), err)
			}
			spec = pardo.GetDoFn()
		case graphx.URNCombinePerKey:
			var cmb pipepb.CombinePayload
			if err := proto.Unmarshal(tr.GetSpec().GetPayload(), &cmb); err != nil {
				t.Fatalf("%s: Combine payload: %v", tr.GetUniqueName(), err)
			}
			spec = cmb.GetCombineFn()
		default:
			continue
		}
		if spec.GetUrn() != graphx.URNDoFn {
			continue
		}
		var tp v1pb.TransformPayload
		if err := protox.DecodeBase64(string(spec.GetPayload()), &tp); err != nil {
			t.Fatalf("%s (%s): transform payload: %v", tr.GetUniqueName(), id, err)
		}
		op, fn, _, _, _, err := graphx.DecodeMultiEdge(tp.GetEdge())
		if err != nil {
			t.Errorf("%s: a worker could not decode its function: %v", tr.GetUniqueName(), err)
			continue
		}
		switch op {
		case graph.ParDo:
			_, err = graph.AsDoFn(fn, graph.MainUnknown)
		case graph.Combine:
			_, err = graph.AsCombineFn(fn)
		}
		if err != nil {
			t.Errorf("%s: decoded function is not a valid %v: %v", tr.GetUniqueName(), op, err)
			continue
		}
		if fn.Recv != nil {
			rt := reflect.TypeOf(fn.Recv)
			if rt.Kind() == reflect.Pointer {
				rt = rt.Elem()
			}
			out[rt.Name()] = append(out[rt.Name()], fn.Recv)
		}
	}
	return out
}

// checkFn checks the decoded receivers of one DoFn type.
func checkFn[T any](t *testing.T, fns map[string][]any, name string, check func(*T) error) {
	t.Helper()
	if len(fns[name]) == 0 {
		t.Errorf("no %s in the translated job (decoded: %v)", name, keysOf(fns))
		return
	}
	for _, recv := range fns[name] {
		fn, ok := recv.(*T)
		if !ok {
			t.Errorf("%s decodes as %T", name, recv)
			continue
		}
		if err := check(fn); err != nil {
			t.Errorf("%s as decoded from the job: %v", name, err)
		}
	}
}

// customTypes collects the types that c and its components code with a
// custom coder.
func customTypes(c *coder.Coder, seen map[reflect.Type]bool) {
	if c == nil {
		return
	}
	if c.Kind == coder.Custom && c.Custom != nil {
		seen[c.Custom.Type] = true
	}
	for _, cc := range c.Components {
		customTypes(cc, seen)
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func keysOf(m map[string][]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// TestDryRunNeedsDataflow: --dry_run is Dataflow's flag; with another
// runner the job would run for real with a placeholder batch, so the
// driver refuses before it touches the database.
func TestDryRunNeedsDataflow(t *testing.T) {
	root := repoRoot(t)
	setFlags(t, map[string]string{"dry_run": "true"})
	for _, runner := range []string{"direct", "prism", "flink"} {
		_, err := driver.Run(context.Background(), driver.Options{Inputs: []string{filepath.Join(root, "testdata/day1/*.csv")},
			Runner: runner, DSN: "postgres://nobody@127.0.0.1:1/nothing"})
		if err == nil || !strings.Contains(err.Error(), "--dry_run is a flag of the Dataflow runner") {
			t.Errorf("%s with --dry_run: %v", runner, err)
		}
	}
}
