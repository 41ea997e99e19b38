package chaos

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/balancebeam/balancebeam/internal/logs"
	"github.com/balancebeam/balancebeam/internal/scratch"
)

var self string

func TestMain(m *testing.M) {
	flag.Parse()
	beam.Init()
	logs.Setup(os.Stderr, "error")
	done := scratch.Use("balancebeam-chaos-test-")
	// The scenarios that need separate processes start the real program.
	dir, err := os.MkdirTemp("", "balancebeam-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	self = filepath.Join(dir, "balancebeam")
	build := exec.Command("go", "build", "-o", self, "github.com/balancebeam/balancebeam/cmd/balancebeam")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "chaos tests: build balancebeam:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	done()
	os.Exit(code)
}

// TestSmallMatrix runs the CI matrix: every scenario, every mode, both local
// runners. Snapshot and ledger must pass every cell they claim, and lww must
// fail exactly the cells the guarantee table says it fails.
func TestSmallMatrix(t *testing.T) {
	var log bytes.Buffer
	opts := Small
	opts.Seed = 20261204
	opts.Self = self
	opts.Log = &log
	cells, err := Run(context.Background(), opts)
	t.Logf("cells as they finished:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	WriteText(&table, cells)
	t.Logf("matrix (seed %d):\n%s", opts.Seed, table.String())
	if len(cells) != len(Scenarios())*3*2 {
		t.Errorf("%d cells, want %d", len(cells), len(Scenarios())*6)
	}
	for _, c := range cells {
		if !c.OK() {
			t.Errorf("%s / %s / %s: %s; note: %s", c.Scenario, c.Mode, c.Runner, cellText(c), c.Note)
		}
	}
}

func TestClassify(t *testing.T) {
	want := map[string]Balance{"a": {100, 2}, "b": {50, 1}, "c": {7, 1}, "d": {1, 1}}
	older := map[string]Balance{"a": {60, 1}}
	got := map[string]Balance{
		"a": {60, 1},  // the older batch's value: stale
		"b": {100, 2}, // counted twice
		"c": {7, 1},   // right
		"x": {1, 1},   // not expected
	} // d missing: lost
	var c Cell
	c.Got = Correct
	classify(&c, got, want, older)
	if c.Stale != 1 || c.Doubled != 1 || c.Lost != 1 || c.Wrong != 1 || c.Got != Lost {
		t.Errorf("classified %+v", c)
	}
}
