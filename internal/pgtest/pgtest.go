// Package pgtest gives tests a real PostgreSQL database. With DATABASE_URL
// set it uses that server; otherwise it starts a throwaway cluster from the
// machine's binaries (see localpg) for the test binary and stops it at the
// end. Each call to New creates a fresh database, so tests do not see each
// other's tables. Missing binaries fail the test: these tests never skip.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/balancebeam/balancebeam/internal/localpg"
	"github.com/balancebeam/balancebeam/internal/scratch"
)

var (
	once    sync.Once
	cluster *localpg.Cluster
	tmpDir  string
	baseDSN string
	initErr error
	seq     atomic.Int64
)

// Main runs the tests in a private temporary directory and then stops the
// throwaway cluster, if one was started. Call it from TestMain.
func Main(m *testing.M) int {
	defer scratch.Use("balancebeam-test-")()
	code := m.Run()
	if cluster != nil && cluster.Started {
		if err := cluster.Stop(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
		}
	}
	if tmpDir != "" {
		os.RemoveAll(tmpDir)
	}
	return code
}

func setup() {
	if dsn := os.Getenv("DATABASE_URL"); dsn != "" {
		baseDSN = dsn
		return
	}
	// The postgres account must be able to reach the directory, so it is
	// made world-searchable (the data directory itself stays private).
	tmpDir, initErr = os.MkdirTemp("", "balancebeam-pgtest-")
	if initErr != nil {
		return
	}
	if initErr = os.Chmod(tmpDir, 0o755); initErr != nil {
		return
	}
	cluster, initErr = localpg.Start(context.Background(), localpg.Options{Dir: filepath.Join(tmpDir, "pg"), Database: "postgres"})
	if initErr == nil {
		baseDSN = cluster.DSN()
	}
}

// New creates a fresh, empty database and returns its URL.
func New(t testing.TB) string {
	t.Helper()
	once.Do(setup)
	if initErr != nil {
		t.Fatalf("pgtest: no PostgreSQL for the tests: %v", initErr)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, baseDSN)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("bbtest_%d_%d_%s", os.Getpid(), seq.Add(1), sanitize(t.Name()))
	if len(name) > 60 {
		name = name[:60]
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	return withDatabase(baseDSN, name)
}

// withDatabase swaps the database of a URL or keyword/value DSN.
func withDatabase(dsn, db string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		scheme, rest, _ := strings.Cut(dsn, "://")
		hostPart, query, _ := strings.Cut(rest, "?")
		host, _, _ := strings.Cut(hostPart, "/")
		out := scheme + "://" + host + "/" + db
		if query != "" {
			out += "?" + query
		}
		return out
	}
	return dsn + " dbname=" + db
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
