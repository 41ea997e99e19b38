package sinks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Connection says how sink workers reach PostgreSQL. It travels inside the
// pipeline graph, so it never holds a password: workers take one from
// PasswordFile (a mounted secret, read at Setup) or from libpq's usual
// PGPASSWORD and PGPASSFILE.
type Connection struct {
	// DSN is a PostgreSQL URL or keyword/value string without a password.
	DSN string
	// PasswordFile, when set, is a file whose first line is the password.
	PasswordFile string
	// MaxConns bounds the pool of each sink worker.
	MaxConns int
}

// SplitPassword removes the password from a postgres:// URL and returns it
// separately, so that the rest can be put in a pipeline graph or a log.
// Keyword/value DSNs with a password are refused: pass it through PGPASSWORD.
func SplitPassword(dsn string) (clean, password string, err error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", "", errors.New("database URL does not parse") // the error would echo the password
		}
		if u.User != nil {
			if pw, ok := u.User.Password(); ok {
				password = pw
				u.User = url.User(u.User.Username())
			}
		}
		q := u.Query()
		if pw := q.Get("password"); pw != "" {
			password = pw
			q.Del("password")
			u.RawQuery = q.Encode()
		}
		return u.String(), password, nil
	}
	for _, f := range strings.Fields(dsn) {
		if strings.HasPrefix(f, "password=") {
			return "", "", errors.New("keyword/value DSN holds a password: put it in PGPASSWORD or a password file instead")
		}
	}
	return dsn, "", nil
}

// Redact describes a DSN for logs: user, host, port and database, never a
// password.
func Redact(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}

// OpenPool opens a pgx pool for c. The pool connects lazily.
func OpenPool(ctx context.Context, c Connection) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(c.DSN)
	if err != nil {
		return nil, fmt.Errorf("parse database DSN %s: %w", Redact(c.DSN), err)
	}
	if c.PasswordFile != "" {
		pw, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read database password file: %w", err)
		}
		cfg.ConnConfig.Password = strings.TrimRight(strings.SplitN(string(pw), "\n", 2)[0], "\r")
	}
	if c.MaxConns > 0 {
		cfg.MaxConns = int32(c.MaxConns)
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "balancebeam"
	}
	cfg.AfterConnect = registerCents
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", Redact(c.DSN), err)
	}
	return pool, nil
}

// Retry sets how a flush is retried on transient errors.
type Retry struct {
	// Attempts is the most tries of one flush, the first included.
	Attempts int
	// Initial is the wait before the second try; it doubles up to Max.
	Initial, Max time.Duration
}

// DefaultRetry rides out a dropped connection, a failover or a database
// restart of a few seconds.
var DefaultRetry = Retry{Attempts: 10, Initial: 100 * time.Millisecond, Max: 5 * time.Second}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = DefaultRetry.Attempts
	}
	if r.Initial <= 0 {
		r.Initial = DefaultRetry.Initial
	}
	if r.Max <= 0 {
		r.Max = DefaultRetry.Max
	}
	return r
}

// Do runs fn until it succeeds, fails permanently or runs out of attempts.
// The waits are fixed (no jitter): a retry changes nothing of what is written.
func (r Retry) Do(ctx context.Context, what string, fn func() error) error {
	r = r.withDefaults()
	wait := r.Initial
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		if !IsTransient(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		if attempt >= r.Attempts {
			return fmt.Errorf("%s: giving up after %d attempts: %w", what, attempt, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, r.Max)
	}
}

// retryable marks an error the sink knows a retry resolves (a race it
// detects itself, such as a ledger id inserted concurrently).
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

// IsTransient reports whether err is worth retrying: a lost or refused
// connection, a server shutting down or starting, a serialization failure
// or a deadlock. Everything else (a constraint, a type, a permission) is
// permanent and fails the bundle with its SQL state.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var r retryable
	if errors.As(err, &r) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", // serialization_failure
			"40P01", // deadlock_detected
			"57P01", // admin_shutdown (pg_terminate_backend, fast shutdown)
			"57P02", // crash_shutdown
			"57P03", // cannot_connect_now (starting up, in recovery)
			"53300": // too_many_connections
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection_exception class
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "unexpected EOF")
}
