package localpg

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestRelativeDir: a server started in a state folder is found, and
// stopped, by the folder's relative name (balancebeam db status and db stop
// with the default --state_dir), although the server's programs run from /.
func TestRelativeDir(t *testing.T) {
	if _, err := BinDir(); err != nil {
		t.Fatal(err) // never skipped: CI has the binaries (scripts/ensure-postgres.sh)
	}
	ctx := context.Background()
	root, err := os.MkdirTemp("", "balancebeam-localpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil { // the postgres account must reach it
		t.Fatal(err)
	}
	c, err := Start(ctx, Options{Dir: filepath.Join(root, "state", "pg"), Database: "postgres"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(ctx) })
	t.Chdir(root)
	rel := filepath.Join("state", "pg")
	if port, ok := Running(ctx, rel); !ok || port != c.Port {
		t.Fatalf("Running(%q) = %d, %v; the server is on port %d", rel, port, ok, c.Port)
	}
	if stopped, err := StopDir(ctx, rel); err != nil || !stopped {
		t.Fatalf("StopDir(%q) = %v, %v", rel, stopped, err)
	}
	if _, ok := Running(ctx, rel); ok {
		t.Errorf("still running after StopDir")
	}
	if stopped, err := StopDir(ctx, rel); err != nil || stopped {
		t.Errorf("StopDir of a stopped server = %v, %v; want false, nil", stopped, err)
	}
}
