// Package localpg runs a PostgreSQL server from the machine's own binaries
// in a folder of its own: the embedded default database of the balancebeam
// command, and the throwaway database of the tests. As root it runs the
// server as the postgres account, since initdb refuses root.
package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoBinaries is returned when no PostgreSQL server binaries are found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH, via pg_config --bindir or under /usr/lib/postgresql/*/bin; install them (Debian: apt-get install -y postgresql) or pass --database")

// Options configure a cluster.
type Options struct {
	// Dir is the data directory. It is created and initialised if missing.
	Dir string
	// Durable keeps fsync on. Throwaway test clusters turn it off for speed.
	Durable bool
	// Database is created on start if missing; empty means "balancebeam".
	Database string
}

// Cluster is a running local PostgreSQL server.
type Cluster struct {
	Dir      string
	Port     int
	Database string
	// Started is true when Start started the server (rather than finding it
	// running already).
	Started bool
	durable bool
	binDir  string
	runAs   *user.User
}

// DefaultDatabase is the database created in a new cluster.
const DefaultDatabase = "balancebeam"

// BinDir finds the directory with initdb and pg_ctl.
func BinDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if isFile(filepath.Join(dir, "pg_ctl")) && isFile(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	for _, m := range matches {
		dir := filepath.Dir(m)
		if isFile(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(path string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return v
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// Start initialises the data directory if needed and starts the server, or
// finds it already running, and makes sure the database exists.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Database: opts.Database, binDir: bin, durable: opts.Durable}
	if c.Database == "" {
		c.Database = DefaultDatabase
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, so the server must run as the postgres account, which is missing: %w", err)
		}
		c.runAs = u
	}
	if err := c.initdb(ctx); err != nil {
		return nil, err
	}
	if port, ok := c.runningPort(ctx); ok {
		c.Port = port
	} else if err := c.start(ctx, opts.Durable); err != nil {
		return nil, err
	}
	if err := c.createDatabase(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// DSN is the URL of the cluster's database.
func (c *Cluster) DSN() string { return c.DSNFor(c.Database) }

// DSNFor is the URL of a database of the cluster.
func (c *Cluster) DSNFor(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// PsqlCommand is the command line that connects psql to the database.
func (c *Cluster) PsqlCommand() string {
	return fmt.Sprintf("psql -h 127.0.0.1 -p %d -U postgres %s", c.Port, c.Database)
}

// Stop stops the server (fast shutdown).
func (c *Cluster) Stop(ctx context.Context) error {
	if out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.Dir, "-m", "fast", "-w"); err != nil {
		return fmt.Errorf("stop PostgreSQL in %s: %w: %s", c.Dir, err, out)
	}
	return nil
}

// Restart stops the server (fast shutdown, which ends every connection),
// waits down, and starts it again on the same port.
func (c *Cluster) Restart(ctx context.Context, down time.Duration) error {
	if err := c.Stop(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(down):
	}
	port := c.Port
	if err := c.start(ctx, c.durable); err != nil {
		return err
	}
	if c.Port != port {
		return fmt.Errorf("PostgreSQL in %s came back on port %d, not %d", c.Dir, c.Port, port)
	}
	return nil
}

// Running reports whether a server is running in dir, and its port.
func Running(ctx context.Context, dir string) (port int, ok bool) {
	// The server's programs run from /, so a relative dir would name
	// another folder.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return 0, false
	}
	c := &Cluster{Dir: dir}
	bin, err := BinDir()
	if err != nil {
		return 0, false
	}
	c.binDir = bin
	if os.Geteuid() == 0 {
		if u, err := user.Lookup("postgres"); err == nil {
			c.runAs = u
		}
	}
	return c.runningPort(ctx)
}

// StopDir stops a server running in dir, if any.
func StopDir(ctx context.Context, dir string) (bool, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false, fmt.Errorf("state folder %s: %w", dir, err)
	}
	port, ok := Running(ctx, dir)
	if !ok {
		return false, nil
	}
	c := &Cluster{Dir: dir, Port: port}
	c.binDir, _ = BinDir()
	if os.Geteuid() == 0 {
		c.runAs, _ = user.Lookup("postgres")
	}
	return true, c.Stop(ctx)
}

func (c *Cluster) initdb(ctx context.Context) error {
	if isFile(filepath.Join(c.Dir, "PG_VERSION")) {
		return nil
	}
	// The parents must stay searchable for the postgres account; the data
	// directory itself is private, as initdb wants.
	if err := os.MkdirAll(filepath.Dir(c.Dir), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(c.Dir), err)
	}
	if err := os.Mkdir(c.Dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", c.Dir, err)
	}
	if c.runAs != nil {
		if err := c.chown(c.Dir); err != nil {
			return err
		}
		if err := c.checkTraversable(); err != nil {
			return err
		}
	}
	out, err := c.run(ctx, "initdb", "-D", c.Dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	if err != nil {
		return fmt.Errorf("initdb %s: %w: %s", c.Dir, err, out)
	}
	return nil
}

// checkTraversable makes sure the postgres account can reach the data
// directory through its parents.
func (c *Cluster) checkTraversable() error {
	for d := filepath.Dir(c.Dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("the postgres account cannot reach %s: %s is not searchable by others (chmod o+x it, or choose another --state_dir)", c.Dir, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func (c *Cluster) chown(path string) error {
	uid, _ := strconv.Atoi(c.runAs.Uid)
	gid, _ := strconv.Atoi(c.runAs.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("hand %s to the postgres account: %w", path, err)
	}
	return nil
}

// runningPort returns the port of a server running in the data directory.
func (c *Cluster) runningPort(ctx context.Context) (int, bool) {
	if _, err := c.run(ctx, "pg_ctl", "status", "-D", c.Dir); err != nil {
		return 0, false
	}
	pid, err := os.ReadFile(filepath.Join(c.Dir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	lines := strings.Split(string(pid), "\n")
	if len(lines) < 4 {
		return 0, false
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	if err != nil {
		return 0, false
	}
	return port, true
}

const portFile = "balancebeam.port"

func (c *Cluster) start(ctx context.Context, durable bool) error {
	port := 0
	if b, err := os.ReadFile(filepath.Join(c.Dir, portFile)); err == nil {
		if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && portFree(p) {
			port = p
		}
	}
	if port == 0 {
		p, err := freePort()
		if err != nil {
			return err
		}
		port = p
	}
	if err := os.WriteFile(filepath.Join(c.Dir, portFile), []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
		return fmt.Errorf("record port: %w", err)
	}
	settings := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=200", port)
	if !durable {
		settings += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	}
	logFile := filepath.Join(c.Dir, "server.log")
	out, err := c.run(ctx, "pg_ctl", "start", "-D", c.Dir, "-w", "-t", "60", "-l", logFile, "-o", settings)
	if err != nil {
		tail, _ := os.ReadFile(logFile)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return fmt.Errorf("start PostgreSQL in %s: %w: %s\n%s", c.Dir, err, out, tail)
	}
	c.Port = port
	c.Started = true
	return nil
}

func (c *Cluster) createDatabase(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.tryCreateDatabase(ctx)
		if err == nil {
			return nil
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code != "57P03" || time.Now().After(deadline) {
			return fmt.Errorf("create database %s: %w", c.Database, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) tryCreateDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.DSNFor("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", c.Database).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{c.Database}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // created meanwhile
		return nil
	}
	return err
}

// run runs a PostgreSQL program, as the postgres account when root.
func (c *Cluster) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	path := filepath.Join(c.binDir, prog)
	var cmd *exec.Cmd
	if c.runAs != nil {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.runAs.Username, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return bytes.TrimSpace(out.Bytes()), err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(p int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
