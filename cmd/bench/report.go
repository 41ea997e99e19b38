package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/balancebeam/balancebeam/internal/txgen"
)

type machineInfo struct {
	CPU              string `json:"cpu"`
	Cores            int    `json:"cores"`
	MemoryGiB        float64
	Kernel           string `json:"kernel"`
	Go               string `json:"go"`
	Postgres         string `json:"postgres"`
	PostgresSettings string `json:"postgres_settings"`
}

type results struct {
	Started, Finished     time.Time
	Command               string
	Machine               machineInfo
	LoadBefore, LoadAfter string
	Runs                  int
	Sizes                 []sizeResult
}

type sizeResult struct {
	Rows       int64
	Accounts   int
	Files      int
	Summary    txgen.Counts
	Generate   *measurement
	LoadBefore string
	LoadAfter  string
	Configs    []*configResult
	Skipped    []string `json:",omitempty"`
}

type configResult struct {
	Name, Label, Kind string
	Mode              string `json:",omitempty"`
	Runs              []measurement
	// Medians over the runs.
	Seconds, InnerSeconds float64
	MaxRSSBytes           int64
	RowsWritten           int64
	// Ratio is Seconds over the baseline's Seconds in the same invocation.
	Ratio float64
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func (s *sizeResult) finish() {
	var base float64
	for _, c := range s.Configs {
		var secs, inner, rss, written []float64
		for _, r := range c.Runs {
			secs = append(secs, r.Seconds)
			inner = append(inner, r.InnerSeconds)
			rss = append(rss, float64(r.MaxRSSBytes))
			written = append(written, float64(r.RowsWritten))
		}
		c.Seconds, c.InnerSeconds = median(secs), median(inner)
		if c.Kind == "sink" {
			var all []float64
			for _, r := range c.Runs {
				all = append(all, r.Rounds...)
			}
			c.InnerSeconds = median(all) // every write of every run, each into an empty table
		}
		c.MaxRSSBytes, c.RowsWritten = int64(median(rss)), int64(median(written))
		if c.Kind == "baseline" {
			base = c.Seconds
		}
	}
	for _, c := range s.Configs {
		if base > 0 {
			c.Ratio = c.Seconds / base
		}
	}
}

func (s *sizeResult) config(name string) *configResult {
	for _, c := range s.Configs {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func machine() machineInfo {
	m := machineInfo{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				fmt.Sscanf(strings.TrimPrefix(line, "MemTotal:"), "%f", &kb)
			}
		}
		m.MemoryGiB = math.Round(kb/(1<<20)*10) / 10
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

const (
	beginMarker = "<!-- bench:results:begin (written by make bench; edits between the markers are replaced) -->"
	endMarker   = "<!-- bench:results:end -->"
)

func (r *results) write(o options) error {
	for _, p := range []string{o.raw, o.chart} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.raw, append(raw, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(o.chart, r.svg(), 0o644); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(o.out), o.chart)
	if err != nil {
		rel = o.chart
	}
	section := r.markdown(filepath.ToSlash(rel), filepath.ToSlash(o.raw))
	doc, err := os.ReadFile(o.out)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	var out string
	before, rest, found := strings.Cut(string(doc), beginMarker)
	_, after, found2 := strings.Cut(rest, endMarker)
	switch {
	case found && found2:
		out = before + beginMarker + "\n" + section + endMarker + after
	default:
		out = "# Benchmarks\n\n" + beginMarker + "\n" + section + endMarker + "\n" + string(doc)
	}
	if err := os.WriteFile(o.out, []byte(out), 0o644); err != nil {
		return err
	}
	fmt.Print(section)
	return nil
}

func mib(b int64) string { return fmt.Sprintf("%d MiB", (b+(1<<19))>>20) }

func rate(rows int64, secs float64) string {
	if secs <= 0 {
		return "–"
	}
	v := float64(rows) / secs
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func spread(c *configResult) string {
	var xs []string
	for _, r := range c.Runs {
		xs = append(xs, fmt.Sprintf("%.2f", r.Seconds))
	}
	return strings.Join(xs, ", ")
}

func (r *results) markdown(chart, raw string) string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "Measured %s (%s to %s UTC) with\n\n```sh\n%s\n```\n\n",
		r.Started.Format("2006-01-02"), r.Started.Format("15:04"), r.Finished.Format("15:04"), r.Command)
	fmt.Fprintf(&b, "- machine: %s, %d cores, %.1f GiB, Linux %s; %s; %s (throwaway cluster: %s)\n",
		m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.Go, m.Postgres, m.PostgresSettings)
	fmt.Fprintf(&b, "- load average (1, 5, 15 min): %s before, %s after\n", r.LoadBefore, r.LoadAfter)
	fmt.Fprintf(&b, "- every configuration is a separate process, run %d times, interleaved with the others, each in a fresh database; "+
		"times are wall-clock medians, RSS is the median of the child's peak resident set (getrusage), "+
		"ratio is the median over the baseline's median of this invocation; every run's tables were checked against txgen's expected balances\n", r.Runs)
	fmt.Fprintf(&b, "- figures of every run: [%s](%s); chart: [%s](%s)\n\n", filepath.Base(raw), raw, filepath.Base(chart), chart)
	for _, s := range r.Sizes {
		sum := s.Summary
		fmt.Fprintf(&b, "### %s rows, %d accounts, %d files\n\n", human(s.Rows), s.Accounts, s.Files)
		fmt.Fprintf(&b, "%d rows read = %d applied + %d exact duplicates + %d rejected (%s); load %s before, %s after.",
			sum.Rows, sum.Applied, sum.Duplicates, sum.Rejected, reasons(sum.RejectedByReason), s.LoadBefore, s.LoadAfter)
		if g := s.Generate; g != nil {
			fmt.Fprintf(&b, " txgen wrote them in %.1f s with a peak RSS of %s.", g.Seconds, mib(g.MaxRSSBytes))
		}
		b.WriteString("\n\n| configuration | wall (median) | runs (s) | rows/s | peak RSS | ratio to baseline | accounts rows written |\n")
		b.WriteString("| --- | ---: | --- | ---: | ---: | ---: | ---: |\n")
		for _, c := range s.Configs {
			if c.Kind == "sink" {
				continue
			}
			fmt.Fprintf(&b, "| %s | %.2f s | %s | %s | %s | %.2fx | %d |\n", c.Label, c.Seconds, spread(c), rate(s.Rows, c.Seconds),
				mib(c.MaxRSSBytes), c.Ratio, c.RowsWritten)
		}
		if len(s.Skipped) > 0 {
			fmt.Fprintf(&b, "\nNot run at this size (--skip): %s.\n", strings.Join(s.Skipped, ", "))
		}
		if sinks := s.sinkConfigs(); len(sinks) > 0 {
			b.WriteString("\nThe sinks alone, writing the batch's account totals (4 shards, 10,000 rows a flush) into an empty table, outside a runner; the median of every write (runs × rounds, each into a table of its own):\n\n")
			b.WriteString("| sink | write (median) | writes (s) | accounts/s | peak RSS |\n| --- | ---: | --- | ---: | ---: |\n")
			for _, c := range sinks {
				var xs []string
				for _, r := range c.Runs {
					for _, v := range r.Rounds {
						xs = append(xs, fmt.Sprintf("%.2f", v))
					}
				}
				fmt.Fprintf(&b, "| %s | %.3f s | %s | %s | %s |\n", c.Label, c.InnerSeconds, strings.Join(xs, ", "), rate(sum.Accounts, c.InnerSeconds), mib(c.MaxRSSBytes))
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("### Targets\n\n| target | measured | met |\n| --- | --- | --- |\n")
	for _, t := range r.targets() {
		met := "yes"
		switch {
		case t.pending:
			met = "pending"
		case !t.met:
			met = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", t.name, t.measured, met)
	}
	b.WriteString("\n")
	return b.String()
}

func (s *sizeResult) sinkConfigs() []*configResult {
	var out []*configResult
	for _, c := range s.Configs {
		if c.Kind == "sink" {
			out = append(out, c)
		}
	}
	return out
}

func human(n int64) string {
	switch {
	case n >= 1e6 && n%1e6 == 0:
		return fmt.Sprintf("%dM", n/1e6)
	case n >= 1e3 && n%1e3 == 0:
		return fmt.Sprintf("%dk", n/1e3)
	}
	return fmt.Sprint(n)
}

func reasons(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(mapsKeys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func mapsKeys(m map[string]int64) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

type target struct {
	name, measured string
	met, pending   bool
}

func (r *results) targets() []target {
	var ts []target
	ratio := func(name, cfg string, max float64) {
		var ms []string
		met, any := true, false
		for _, s := range r.Sizes {
			if c := s.config(cfg); c != nil && c.Ratio > 0 {
				any = true
				ms = append(ms, fmt.Sprintf("%.2fx at %s", c.Ratio, human(s.Rows)))
				met = met && c.Ratio <= max
			}
		}
		if any {
			ts = append(ts, target{name: name, measured: strings.Join(ms, ", "), met: met})
		}
	}
	ratio("direct runner at most 2x the baseline", "direct", 2)
	ratio("Prism at most 3x the baseline", "prism", 3)
	// Linearity: the largest size against the smallest.
	if len(r.Sizes) >= 2 {
		small, large := r.Sizes[0], r.Sizes[len(r.Sizes)-1]
		factor := float64(large.Rows) / float64(small.Rows)
		for _, name := range []string{"direct", "prism"} {
			a, b := small.config(name), large.config(name)
			if a == nil || b == nil {
				continue
			}
			x := b.Seconds / a.Seconds
			limit := factor * 1.1
			ts = append(ts, target{name: fmt.Sprintf("%s: %s rows at most %.0fx the time of %s", name, human(large.Rows), limit, human(small.Rows)),
				measured: fmt.Sprintf("%.2fx (%.1f s / %.1f s)", x, b.Seconds, a.Seconds), met: x <= limit})
		}
	}
	for _, s := range r.Sizes {
		if s.Rows < 10000000 {
			continue
		}
		var worst int64
		var which string
		for _, c := range s.Configs {
			if c.Kind != "balancebeam" && c.Kind != "rerun" {
				continue
			}
			for _, run := range c.Runs {
				if run.MaxRSSBytes > worst {
					worst, which = run.MaxRSSBytes, c.Name
				}
			}
		}
		if worst > 0 {
			ts = append(ts, target{name: fmt.Sprintf("peak RSS at %s rows under 4 GiB", human(s.Rows)),
				measured: fmt.Sprintf("at most %s (%s)", mib(worst), which), met: worst < 4<<30})
		}
	}
	// Guarded (snapshot) vs unguarded (lww) merge, same batching.
	for _, s := range r.Sizes {
		g, u := s.config("sink-guarded"), s.config("sink-lww")
		if g == nil || u == nil || u.InnerSeconds <= 0 {
			continue
		}
		// The target is about write throughput: the sinks alone, where the
		// merge is all there is. End to end the same pipeline runs in front
		// of both, and its run-to-run spread is shown next to the ratio.
		x := g.InnerSeconds / u.InnerSeconds
		measured := fmt.Sprintf("sink alone %.2fx of unguarded (%.3f s / %.3f s)", x, g.InnerSeconds, u.InnerSeconds)
		met := x <= 1.05
		if d, l := s.config("direct"), s.config("lww"); d != nil && l != nil {
			measured += fmt.Sprintf("; end to end %.2fx (%.2f s / %.2f s; runs %s / %s)", d.Seconds/l.Seconds, d.Seconds, l.Seconds, spread(d), spread(l))
		}
		ts = append(ts, target{name: fmt.Sprintf("guarded merge within 5%% of unguarded, same batching (%s rows)", human(s.Rows)), measured: measured, met: met})
	}
	for _, s := range r.Sizes {
		g, n := s.config("sink-guarded"), s.config("sink-naive")
		if g != nil && n != nil && g.InnerSeconds > 0 {
			x := n.InnerSeconds / g.InnerSeconds
			e2e := ""
			if d, nv := s.config("direct"), s.config("naive"); d != nil && nv != nil {
				e2e = fmt.Sprintf("; end to end %.1fx", nv.Seconds/d.Seconds)
			}
			ts = append(ts, target{name: fmt.Sprintf("our sink at least 10x the naive sink (%s rows)", human(s.Rows)),
				measured: fmt.Sprintf("sink alone %.1fx (%s vs %s accounts/s)%s", x, rate(s.Summary.Accounts, g.InnerSeconds), rate(s.Summary.Accounts, n.InnerSeconds), e2e),
				met:      x >= 10})
		}
	}
	for _, s := range r.Sizes {
		for _, pair := range [][2]string{{"direct", "rerun"}, {"ledger", "ledger-rerun"}} {
			first, again := s.config(pair[0]), s.config(pair[1])
			if first == nil || again == nil {
				continue
			}
			x := again.Seconds / first.Seconds
			ts = append(ts, target{name: fmt.Sprintf("rerun at most 0.6x of the first run, writing 0 rows (%s mode, %s rows)", first.Mode, human(s.Rows)),
				measured: fmt.Sprintf("%.2fx (%.2f s / %.2f s), %d rows written", x, again.Seconds, first.Seconds, again.RowsWritten),
				met:      x <= 0.6 && again.RowsWritten == 0})
		}
	}
	return ts
}

// svg draws the ratios to the baseline as horizontal bars, one group per
// configuration, one bar per input size.
func (r *results) svg() []byte {
	type bar struct {
		label string
		size  int
		ratio float64
	}
	var names []string
	labels := map[string]string{}
	for _, s := range r.Sizes {
		for _, c := range s.Configs {
			if c.Kind == "sink" || c.Kind == "baseline" {
				continue
			}
			if _, ok := labels[c.Name]; !ok {
				names = append(names, c.Name)
				labels[c.Name] = c.Label
			}
		}
	}
	maxRatio := 1.0
	for _, s := range r.Sizes {
		for _, c := range s.Configs {
			maxRatio = math.Max(maxRatio, c.Ratio)
		}
	}
	maxRatio = math.Ceil(maxRatio)
	const (
		left, right, top = 360.0, 60.0, 50.0
		barH, gap        = 16.0, 14.0
		plotW            = 520.0
	)
	colors := []string{"#4477aa", "#ee6677", "#228833", "#ccbb44"}
	groupH := float64(len(r.Sizes))*barH + gap
	height := top + float64(len(names))*groupH + 50
	width := left + plotW + right
	x := func(v float64) float64 { return left + v/maxRatio*plotW }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="14" font-weight="bold">Wall time as a multiple of the baseline (median of %d runs, lower is better)</text>`+"\n", 10.0, r.Runs)
	for v := 0.0; v <= maxRatio; v++ {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="%s"/>`+"\n", x(v), top-8, x(v), height-40, map[bool]string{true: "#333", false: "#ddd"}[v == 1])
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%.0fx</text>`+"\n", x(v), height-26, v)
	}
	for gi, name := range names {
		y0 := top + float64(gi)*groupH
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y0+float64(len(r.Sizes))*barH/2+4, html.EscapeString(shortLabel(labels[name])))
		for si, s := range r.Sizes {
			c := s.config(name)
			if c == nil {
				continue
			}
			y := y0 + float64(si)*barH
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", left, y, x(c.Ratio)-left, barH-2, colors[si%len(colors)])
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%.2fx</text>`+"\n", x(c.Ratio)+4, y+barH-5, c.Ratio)
		}
	}
	for si, s := range r.Sizes {
		lx := left + float64(si)*150
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f">%s rows</text>`+"\n",
			lx, height-16, colors[si%len(colors)], lx+16, height-6, human(s.Rows))
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

func shortLabel(s string) string {
	if len(s) > 58 {
		return s[:57] + "…"
	}
	return s
}
