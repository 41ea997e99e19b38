// Package logs sets up log/slog for balancebeam's programs: one text handler
// on stderr, and the chatter of Beam's in-process runners (Prism's job
// service, the direct runner's plan dumps) moved down to debug level so that
// the program's own lines stand out.
package logs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"

	beamlog "github.com/apache/beam/sdks/v2/go/pkg/beam/log"
)

// Setup installs the default slog logger at the given level ("debug",
// "info", "warn", "error") and routes Beam's own logging through it.
func Setup(w io.Writer, level string) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	h := &quietBeam{Handler: slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})}
	slog.SetDefault(slog.New(h))
	beamlog.SetLogger(beamLogger{})
	return nil
}

const beamPkg = "github.com/apache/beam/"

// quietAll makes quietBeam lower every record of Beam's, errors included.
var quietAll atomic.Bool

// QuietBeamErrors lowers Beam's own error records to debug too: for the
// chaos command, where failing bundles are the point and the program
// reports their outcome itself.
func QuietBeamErrors() { quietAll.Store(true) }

// quietBeam lowers records logged from Beam's packages below warning level
// (or all of them, after QuietBeamErrors) to debug.
type quietBeam struct{ slog.Handler }

func (q *quietBeam) Handle(ctx context.Context, r slog.Record) error {
	if (r.Level < slog.LevelWarn || quietAll.Load()) && r.PC != 0 {
		if f := runtime.FuncForPC(r.PC); f != nil && strings.HasPrefix(f.Name(), beamPkg) {
			if !q.Handler.Enabled(ctx, slog.LevelDebug) {
				return nil
			}
			r.Level = slog.LevelDebug
		}
	}
	return q.Handler.Handle(ctx, r)
}

func (q *quietBeam) WithAttrs(as []slog.Attr) slog.Handler {
	return &quietBeam{Handler: q.Handler.WithAttrs(as)}
}

func (q *quietBeam) WithGroup(name string) slog.Handler {
	return &quietBeam{Handler: q.Handler.WithGroup(name)}
}

// beamLogger forwards Beam's log package to slog: its info becomes debug.
type beamLogger struct{}

func (beamLogger) Log(ctx context.Context, sev beamlog.Severity, _ int, msg string) {
	lv := slog.LevelDebug
	switch {
	case quietAll.Load():
	case sev == beamlog.SevWarn:
		lv = slog.LevelWarn
	case sev == beamlog.SevError || sev == beamlog.SevFatal:
		lv = slog.LevelError
	}
	slog.Log(ctx, lv, strings.TrimSpace(msg), "source", "beam")
}

// BeamTo sends every message of Beam's log package, at any level, to w as
// it is, one after another. A Dataflow dry run prints the translated job
// this way.
func BeamTo(w io.Writer) {
	beamlog.SetLogger(rawBeamLogger{w})
}

type rawBeamLogger struct{ w io.Writer }

func (l rawBeamLogger) Log(_ context.Context, _ beamlog.Severity, _ int, msg string) {
	fmt.Fprintln(l.w, strings.TrimRight(msg, "\n"))
}
