package runners

import (
	"context"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/graphx"
	v1pb "github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/graphx/v1"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners/vet"
	"google.golang.org/protobuf/proto"

	"github.com/balancebeam/balancebeam/pipeline"
	"github.com/balancebeam/balancebeam/sinks"
	"github.com/balancebeam/balancebeam/transforms"
)

// testGraph is the batch graph with every configuration field set to a
// value other than its zero, so that a field lost on the way to a worker
// shows.
func testGraph(t *testing.T) *beam.Pipeline {
	t.Helper()
	p, s := beam.NewPipelineWithRoot()
	pipeline.Build(s, pipeline.Config{
		Files: []transforms.FileSpec{
			{Index: 0, Path: "/data/in/a.csv", Size: 120, SHA256: "aa"},
			{Index: 1, Path: "/data/in/b.csv", Size: 340, SHA256: "bb"},
		},
		Parse:         transforms.ParseConfig{Buckets: 16, BlockBytes: 4096},
		Shards:        3,
		SplitAccounts: true,
		Target: sinks.Target{
			Conn:             sinks.Connection{DSN: "postgres://etl@db:5432/ledger", PasswordFile: "/run/secrets/pg", MaxConns: 3},
			Tables:           sinks.Tables{Accounts: "reporting.accounts"},
			Mode:             sinks.ModeLedger,
			BatchID:          42,
			Run:              3,
			PinnedAt:         time.Date(2026, 12, 2, 6, 0, 0, 123000, time.UTC),
			Buckets:          16,
			FlushRows:        777,
			Retry:            sinks.Retry{Attempts: 4, Initial: time.Second, Max: 9 * time.Second},
			FailAfterFlushes: 5,
		},
	})
	return p
}

// TestEverythingRegistered runs Beam's vet runner over the graph: with
// symbol lookups disabled, it reports every DoFn, combiner, function, type,
// emitter or iterator that is not registered (register.*, beam.RegisterType)
// and would need a symbol table or reflection on a worker.
func TestEverythingRegistered(t *testing.T) {
	if _, err := vet.Execute(context.Background(), testGraph(t)); err != nil {
		t.Fatalf("the graph needs registrations:\n%v", err)
	}
}

// TestDoFnsSurviveEncoding encodes every DoFn and combiner of the graph as
// the launcher does for a remote runner and decodes it as a worker does:
// each must come back whole (every exported field, nothing that only lives
// in the launcher's memory), and be one of the functions we expect.
func TestDoFnsSurviveEncoding(t *testing.T) {
	edges, _, err := testGraph(t).Build()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, edge := range edges {
		var fn *graph.Fn
		switch {
		case edge.DoFn != nil:
			fn = (*graph.Fn)(edge.DoFn)
		case edge.CombineFn != nil:
			fn = (*graph.Fn)(edge.CombineFn)
		default:
			continue
		}
		me, err := graphx.EncodeMultiEdge(edge)
		if err != nil {
			t.Errorf("%s: encode: %v", edge.Name(), err)
			continue
		}
		wire, err := proto.Marshal(me)
		if err != nil {
			t.Fatal(err)
		}
		var back v1pb.MultiEdge
		if err := proto.Unmarshal(wire, &back); err != nil {
			t.Fatal(err)
		}
		_, dec, _, _, _, err := graphx.DecodeMultiEdge(&back)
		if err != nil {
			t.Errorf("%s: decode: %v", edge.Name(), err)
			continue
		}
		if fn.Recv == nil {
			continue // a plain function, looked up by name
		}
		if !reflect.DeepEqual(dec.Recv, fn.Recv) {
			t.Errorf("%s decodes differently:\n sent %#v\n  got %#v", edge.Name(), fn.Recv, dec.Recv)
		}
		rt := reflect.TypeOf(fn.Recv)
		if rt.Kind() == reflect.Pointer {
			rt = rt.Elem()
		}
		seen[rt.PkgPath()+"."+rt.Name()] = true
	}
	for _, want := range []any{transforms.ParseFileFn{}, transforms.DedupFn{}, transforms.SumTotalsFn{},
		sinks.BalanceWriterFn{}, sinks.RejectWriterFn{}} {
		rt := reflect.TypeOf(want)
		if !seen[rt.PkgPath()+"."+rt.Name()] {
			names := make([]string, 0, len(seen))
			for n := range seen {
				names = append(names, n)
			}
			sort.Strings(names)
			t.Errorf("%v is not in the graph (seen: %v)", rt, names)
		}
	}
}
