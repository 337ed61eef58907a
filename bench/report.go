package main

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// WorkloadResult is one workload on one target.
type WorkloadResult struct {
	Workload Workload
	Cmd      string
	Result   *Result // nil if it produced no numbers
	Err      string  // failure, timeout or failed requests
	Note     string  // e.g. rounds in which it did not run
	Wall     time.Duration
	CPU      string // cluster targets: CPU time each member used during it
	// Single-node watch workloads: the server's resident memory (kB) just
	// before the workload and its highest sample during it.
	RSSBefore, RSSPeak int64
}

// TargetResult is everything measured on one target.
type TargetResult struct {
	Name           string
	ServerCmd      string
	ReadyAfter     time.Duration
	Seed           string
	Commands       []string // setup commands (seed, splits)
	Splits         [][]byte
	Spread         []int
	RangeList      string
	RangeListAfter string
	Workloads      []*WorkloadResult
	Err            string // why the target stopped early, if it did
	Notes          []string
	Round          int    // 1-based; 0 for an aggregate of several rounds
	LoadBefore     string // 1-minute load average when the workloads started
	Rounds         []*TargetResult
}

// Aggregate merges the rounds of one target: each metric is the median over
// the rounds that produced numbers; errors of any round are kept.
func Aggregate(cfg *Config, rounds []*TargetResult) *TargetResult {
	if len(rounds) == 1 {
		rounds[0].Rounds = rounds
		return rounds[0]
	}
	first := rounds[0]
	agg := &TargetResult{
		Name: first.Name, ServerCmd: first.ServerCmd, ReadyAfter: first.ReadyAfter, Seed: first.Seed,
		Commands: first.Commands, Splits: first.Splits, Spread: first.Spread, RangeList: first.RangeList,
		RangeListAfter: first.RangeListAfter,
		Rounds:         rounds,
	}
	var errs, loads []string
	for _, r := range rounds {
		if r.Err != "" {
			errs = append(errs, fmt.Sprintf("round %d: %s", r.Round, r.Err))
		}
		for _, n := range r.Notes {
			agg.Notes = append(agg.Notes, fmt.Sprintf("round %d: %s", r.Round, n))
		}
		loads = append(loads, r.LoadBefore)
	}
	agg.Err = strings.Join(errs, "; ")
	agg.LoadBefore = strings.Join(loads, ", ")
	for _, w := range TargetWorkloads(cfg, first.Name) {
		var res []*Result
		var werrs []string
		var wr *WorkloadResult
		var missing []string
		for _, r := range rounds {
			x := r.workload(w.Name)
			if x == nil {
				missing = append(missing, fmt.Sprint(r.Round))
				continue
			}
			if wr == nil {
				wr = &WorkloadResult{Workload: w, Cmd: x.Cmd}
			}
			wr.Wall += x.Wall
			if x.Result != nil {
				res = append(res, x.Result)
			}
			if x.Err != "" {
				werrs = append(werrs, fmt.Sprintf("round %d: %s", r.Round, x.Err))
			}
		}
		if wr == nil {
			continue
		}
		wr.Err = strings.Join(werrs, "; ")
		if len(missing) > 0 {
			ran := len(rounds) - len(missing)
			plural := "s"
			if ran == 1 {
				plural = ""
			}
			wr.Note = fmt.Sprintf("from %d round%s (not run in round %s: the target stopped early)", ran, plural, strings.Join(missing, ", "))
		}
		if len(res) > 0 {
			wr.Result = medianResult(res)
		}
		var before, peak []float64
		for _, r := range rounds {
			if x := r.workload(w.Name); x != nil && x.RSSPeak > 0 {
				before = append(before, float64(x.RSSBefore))
				peak = append(peak, float64(x.RSSPeak))
			}
		}
		if len(peak) > 0 {
			wr.RSSBefore, wr.RSSPeak = int64(median(before)), int64(median(peak))
		}
		agg.Workloads = append(agg.Workloads, wr)
	}
	return agg
}

// median of v (sorted in place).
func median(v []float64) float64 {
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func medianResult(rs []*Result) *Result {
	med := func(f func(*Result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		return median(v)
	}
	out := &Result{
		RPS:         med(func(r *Result) float64 { return r.RPS }),
		Average:     med(func(r *Result) float64 { return r.Average }),
		TotalSecs:   med(func(r *Result) float64 { return r.TotalSecs }),
		Percentiles: map[string]float64{},
		Errors:      map[string]int{},
	}
	for _, p := range []string{"50", "90", "99", "99.9"} {
		out.Percentiles[p] = med(func(r *Result) float64 { return r.Percentiles[p] })
	}
	for _, r := range rs {
		for m, n := range r.Errors {
			out.Errors[m] += n
		}
	}
	return out
}

// Report is one run.
type Report struct {
	Config     *Config
	Started    time.Time
	Finished   time.Time
	Machine    Machine
	BuildCmds  []string
	Invocation string
	Targets    []*TargetResult
	// Cluster: this report is of the 3-member targets (etcd-3, mosaic-3).
	Cluster bool
}

func (t *TargetResult) workload(name string) *WorkloadResult {
	for _, w := range t.Workloads {
		if w.Workload.Name == name {
			return w
		}
	}
	return nil
}

func (r *Report) target(name string) *TargetResult {
	for _, t := range r.Targets {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// result returns the numbers of a workload on a target, or nil.
func (r *Report) result(target, workload string) *Result {
	t := r.target(target)
	if t == nil {
		return nil
	}
	w := t.workload(workload)
	if w == nil {
		return nil
	}
	return w.Result
}

var targetTitles = map[string]string{
	"etcd":     "etcd",
	"mosaic-1": "Mosaic, 1 range",
	"mosaic-8": "Mosaic, 8 ranges",
	"etcd-3":   "etcd, 3 members",
	"mosaic-3": "Mosaic, 3 members",
}

func (r *Report) title(name string) string {
	if name == "mosaic-8" && r.Config.Ranges != 8 {
		return fmt.Sprintf("Mosaic, %d ranges", r.Config.Ranges)
	}
	return targetTitles[name]
}

func ms(secs float64) string { return fmt.Sprintf("%.3f ms", secs*1000) }

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// ratio3 shows a ratio with enough digits that 0.996 is not shown as 1.00.
func ratio3(q float64) string { return fmt.Sprintf("%.3f×", q) }

// row is one line of the results table.
type row struct {
	workload, target, ops, avg, p99, opsRatio, avgRatio, p99Ratio, note string
}

func (r *Report) rows() []row {
	var rows []row
	for _, w := range Workloads(r.Config) {
		for _, t := range r.Targets {
			if !runsWorkload(r.Config, t.Name, w.Name) {
				continue
			}
			base := r.result(baseline(t.Name), w.Name)
			rw := row{workload: w.Title, target: r.title(t.Name), ops: "–", avg: "–", p99: "–", opsRatio: "–", avgRatio: "–", p99Ratio: "–"}
			wr := t.workload(w.Name)
			switch {
			case wr == nil && t.Err != "":
				rw.note = "not run: " + t.Err
			case wr == nil:
				rw.note = "not run"
			default:
				rw.note = strings.TrimPrefix(wr.Err+"; "+wr.Note, "; ")
				rw.note = strings.TrimSuffix(rw.note, "; ")
			}
			if wr != nil && wr.Result != nil {
				res := wr.Result
				p99, _ := res.P("99")
				rw.ops = fmt.Sprintf("%.0f", res.RPS)
				rw.avg = ms(res.Average)
				rw.p99 = ms(p99)
				if base != nil && !isEtcd(t.Name) {
					bp99, _ := base.P("99")
					rw.opsRatio = ratio(res.RPS, base.RPS)
					rw.avgRatio = ratio(res.Average, base.Average)
					rw.p99Ratio = ratio(p99, bp99)
				}
			}
			rows = append(rows, rw)
		}
	}
	return rows
}

// Goal is one of the performance targets.
type Goal struct {
	Text     string
	Workload string
	Metric   string  // "ops" (higher is better) or "avg" (lower is better)
	Bound    float64 // ratio Mosaic/etcd
}

func (r *Report) goals() []Goal {
	etcd := "etcd"
	if r.Cluster {
		etcd = "3-member etcd"
	}
	all := []Goal{
		{fmt.Sprintf("put throughput at %d clients ≥ 1.0× %s", r.Config.Clients, etcd), "put-many", "ops", 1.0},
		{"single-client put latency (average) ≤ 1.5× " + etcd, "put-1", "avg", 1.5},
		{fmt.Sprintf("linearizable range throughput (%d clients) ≥ 1.0× %s", r.Config.Clients, etcd), "range-l", "ops", 1.0},
	}
	var gs []Goal
	for _, g := range all {
		// Only the goals whose workload these targets run.
		for _, t := range r.Targets {
			if !isEtcd(t.Name) && runsWorkload(r.Config, t.Name, g.Workload) {
				gs = append(gs, g)
				break
			}
		}
	}
	return gs
}

// verdict says whether a Mosaic target meets a goal.
func (r *Report) verdict(g Goal, target string) string {
	base, res := r.result(baseline(target), g.Workload), r.result(target, g.Workload)
	if base == nil || res == nil {
		return "not measured"
	}
	if t := r.target(target); t != nil {
		if w := t.workload(g.Workload); w != nil && w.Err != "" {
			// Numbers with failed requests don't count.
			return "missed (errors: " + firstLine(w.Err) + ")"
		}
	}
	switch g.Metric {
	case "ops":
		q := res.RPS / base.RPS
		if q >= g.Bound {
			return fmt.Sprintf("**met** (%s)", ratio3(q))
		}
		return fmt.Sprintf("**missed** (%s)", ratio3(q))
	default:
		q := res.Average / base.Average
		if q <= g.Bound {
			return fmt.Sprintf("**met** (%s)", ratio3(q))
		}
		return fmt.Sprintf("**missed** (%s)", ratio3(q))
	}
}

// busy reports whether any target started with a load average above nproc.
func (r *Report) busy() bool {
	for _, t := range r.Targets {
		for _, f := range strings.Split(t.LoadBefore, ",") {
			var l float64
			if _, err := fmt.Sscan(strings.TrimSpace(f), &l); err == nil && r.Machine.NProc > 0 && l > float64(r.Machine.NProc) {
				return true
			}
		}
	}
	return false
}

// Table is the plain-text table printed at the end of a run.
func (r *Report) Table() string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\ttarget\tops/s\tavg\tp99\tops/s ÷ etcd\tavg ÷ etcd\tp99 ÷ etcd\tnote")
	for _, rw := range r.rows() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", rw.workload, rw.target, rw.ops, rw.avg, rw.p99, rw.opsRatio, rw.avgRatio, rw.p99Ratio, rw.note)
	}
	tw.Flush()
	var mosaics []string
	for _, t := range r.Targets {
		if !isEtcd(t.Name) {
			mosaics = append(mosaics, t.Name)
		}
	}
	if len(mosaics) > 0 {
		sb.WriteString("\n")
		for _, g := range r.goals() {
			for _, m := range mosaics {
				fmt.Fprintf(&sb, "%-60s %-18s %s\n", g.Text, r.title(m)+":", strings.ReplaceAll(r.verdict(g, m), "**", ""))
			}
		}
	}
	return sb.String()
}

// memoryTable writes the servers' resident memory during the watch
// workloads, if measured.
func (r *Report) memoryTable(p func(string, ...any)) {
	var lines []string
	for _, w := range Workloads(r.Config) {
		for _, t := range r.Targets {
			x := t.workload(w.Name)
			if x == nil || x.RSSPeak == 0 {
				continue
			}
			vs := "–"
			if e := r.target(baseline(t.Name)); e != nil && e != t {
				if ex := e.workload(w.Name); ex != nil && ex.RSSPeak > 0 {
					vs = ratio(float64(x.RSSPeak), float64(ex.RSSPeak))
				}
			}
			lines = append(lines, fmt.Sprintf("| %s | %s | %.0f | %.0f | %s |\n", w.Title, r.title(t.Name), float64(x.RSSBefore)/1024, float64(x.RSSPeak)/1024, vs))
		}
	}
	if len(lines) == 0 {
		return
	}
	p("## Server memory during the watch workloads\n\n")
	p("Resident memory (VmRSS, MiB) of the server process just before each watch workload and the highest of its samples every 50ms during it (medians over the rounds); peak ÷ etcd is Mosaic's peak over etcd's.\n\n")
	p("| workload | target | RSS before | peak RSS | peak ÷ etcd |\n| --- | --- | ---: | ---: | ---: |\n")
	for _, l := range lines {
		p("%s", l)
	}
	p("\n")
}

func mdCell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// Markdown is the content of results.md.
func (r *Report) Markdown() string {
	c := r.Config
	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }

	if r.Cluster {
		p("# Mosaic vs etcd, 3-member clusters — benchmark results\n\n")
	} else {
		p("# Mosaic vs etcd — benchmark results\n\n")
	}
	p("Generated by `%s` (see [README.md](README.md)); do not edit by hand.\n\n", r.Invocation)
	p("- **Date:** %s (run took %v)\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Finished.Sub(r.Started).Round(time.Second))
	p("- **Machine:** nproc=%d, %s, %s, RAM %s\n", r.Machine.NProc, r.Machine.CPU, r.Machine.Kernel, r.Machine.MemTotal)
	p("- **Go:** %s\n", r.Machine.GoVersion)
	p("- **etcd:** go.etcd.io/etcd/server/v3@%s; **benchmark tool:** go.etcd.io/etcd/v3/tools/benchmark@%s\n", c.EtcdVersion, c.BenchmarkVersion)
	if r.Machine.MosaicRev != "" {
		p("- **Mosaic:** built from %s\n", r.Machine.MosaicRev)
	}
	if r.Cluster {
		p("- **Setup:** every target is a fresh %d-member cluster: %d server processes on 127.0.0.1, each with its own client and peer ports and a new data dir (all on the same disk), started together with etcd's static bootstrap flags (`--initial-cluster` listing all members, `--initial-cluster-state new`, a token per target). The benchmark tool is given all %d client endpoints, as etcd's docs benchmark a cluster: each of its gRPC connections goes to one member, round robin. **All %d members and the benchmark tool share the same %d-core machine** (and anything else running on it), so this measures replication's CPU and fsync cost on one box, not network latency. Values %d bytes, keys %d bytes, random over --key-space-size=%d.\n\n",
			clusterSize, clusterSize, clusterSize, clusterSize, r.Machine.NProc, c.ValSize, c.KeySize, c.KeySpace)
	} else {
		p("- **Setup:** every target is a fresh single-member server on loopback with a new data dir on the same disk, started with etcd's flags, benchmark tool on the same %d-core machine. Values %d bytes, keys %d bytes, random over --key-space-size=%d.\n\n", r.Machine.NProc, c.ValSize, c.KeySize, c.KeySpace)
	}

	p("## Results\n\n")
	p("| workload | target | ops/s | avg latency | p99 latency | ops/s ÷ etcd | avg ÷ etcd | p99 ÷ etcd | note |\n")
	p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, rw := range r.rows() {
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.workload, rw.target, rw.ops, rw.avg, rw.p99, rw.opsRatio, rw.avgRatio, rw.p99Ratio, mdCell(rw.note))
	}
	if r.Cluster {
		p("\nRatios are Mosaic ÷ etcd, each with %d members: above 1 is better for ops/s, below 1 is better for latency.", clusterSize)
	} else {
		p("\nRatios are Mosaic ÷ etcd: above 1 is better for ops/s, below 1 is better for latency.")
	}
	if c.Rounds > 1 {
		p(" Each number is the median over %d interleaved rounds (etcd, Mosaic, …, etcd, Mosaic, …); every round's numbers are below.", c.Rounds)
	}
	p(" Load average (1 min) when each target started: ")
	var loads []string
	for _, t := range r.Targets {
		loads = append(loads, fmt.Sprintf("%s %s", r.title(t.Name), t.LoadBefore))
	}
	p("%s (on %d cores).", strings.Join(loads, "; "), r.Machine.NProc)
	if r.busy() {
		p(" **The machine was busy with other work during this run** (load above its core count), so absolute numbers are low and noisy; compare within the run only.")
	}
	p("\n\n")
	r.memoryTable(p)

	p("## Targets from the issue\n\n")
	var mosaics []*TargetResult
	for _, t := range r.Targets {
		if !isEtcd(t.Name) {
			mosaics = append(mosaics, t)
		}
	}
	if len(mosaics) == 0 || r.target(baseline(mosaics[0].Name)) == nil {
		var names []string
		for _, t := range r.Targets {
			names = append(names, t.Name)
		}
		p("Not evaluated: this run did not include both etcd and Mosaic (targets: %s).\n\n", strings.Join(names, ", "))
	} else {
		p("| target |")
		for _, m := range mosaics {
			p(" %s |", r.title(m.Name))
		}
		p("\n| --- |")
		for range mosaics {
			p(" --- |")
		}
		p("\n")
		for _, g := range r.goals() {
			p("| %s |", g.Text)
			for _, m := range mosaics {
				p(" %s |", mdCell(r.verdict(g, m.Name)))
			}
			p("\n")
		}
		p("\n")
	}

	if c.Rounds > 1 {
		p("## Every round\n\n| workload | target | round | ops/s | avg latency | p99 latency | note |\n| --- | --- | ---: | ---: | ---: | ---: | --- |\n")
		for _, w := range Workloads(c) {
			for _, t := range r.Targets {
				if !runsWorkload(c, t.Name, w.Name) {
					continue
				}
				for _, rt := range t.Rounds {
					x := rt.workload(w.Name)
					if x == nil || x.Result == nil {
						note := "not run"
						if x != nil {
							note = x.Err
						} else if rt.Err != "" {
							note = "not run: " + rt.Err
						}
						p("| %s | %s | %d | – | – | – | %s |\n", w.Title, r.title(t.Name), rt.Round, mdCell(note))
						continue
					}
					p99, _ := x.Result.P("99")
					p("| %s | %s | %d | %.0f | %s | %s | %s |\n", w.Title, r.title(t.Name), rt.Round, x.Result.RPS, ms(x.Result.Average), ms(p99), mdCell(x.Err))
				}
			}
		}
		p("\n")
	}

	p("## Commands\n\n")
	p("Built into a temp dir (`GOWORK=off` throwaway modules for the etcd tools, this workspace for Mosaic):\n\n```sh\n")
	for _, b := range r.BuildCmds {
		p("%s\n", b)
	}
	p("```\n\n")
	for _, t := range r.Targets {
		p("### %s\n\n", r.title(t.Name))
		if t.ServerCmd != "" {
			p("```sh\n%s\n", t.ServerCmd)
			for _, cmd := range t.Commands {
				p("%s\n", cmd)
			}
			for _, w := range t.Workloads {
				p("%s\n", w.Cmd)
			}
			p("```\n\n")
		}
		if t.ReadyAfter > 0 {
			p("- ready after %v\n", t.ReadyAfter.Round(time.Millisecond))
		}
		if t.Seed != "" {
			p("- %s\n", t.Seed)
		}
		if len(t.Splits) > 0 {
			var ks []string
			for _, k := range t.Splits {
				ks = append(ks, "`"+shellEscape(k)+"`")
			}
			p("- split keys: %s; keys of the key space per range: %v\n", strings.Join(ks, ", "), t.Spread)
		}
		if t.RangeList != "" {
			p("- `mosaicctl range list` after splitting:\n\n```\n%s\n```\n", t.RangeList)
		}
		if t.RangeListAfter != "" {
			p("- `mosaicctl range list` after the workloads:\n\n```\n%s\n```\n", t.RangeListAfter)
		}
		for _, rt := range t.Rounds {
			for _, w := range rt.Workloads {
				if w.CPU == "" {
					continue
				}
				if len(t.Rounds) > 1 {
					p("- round %d, %s: %s\n", rt.Round, w.Workload.Name, w.CPU)
				} else {
					p("- %s: %s\n", w.Workload.Name, w.CPU)
				}
			}
		}
		for _, w := range t.Workloads {
			if w.Err != "" {
				p("- %s: %s\n", w.Workload.Name, mdCell(w.Err))
			}
		}
		if t.Err != "" {
			p("- **stopped early:** %s\n", mdCell(t.Err))
		}
		for _, n := range t.Notes {
			p("- note: %s\n", mdCell(n))
		}
		p("\n")
	}
	return sb.String()
}
