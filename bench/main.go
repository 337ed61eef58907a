// Command bench compares Mosaic with etcd using etcd's own benchmark tool.
//
// From the repository root:
//
//	go run ./bench              # full run: etcd, Mosaic 1 range, Mosaic 8 ranges
//	go run ./bench -quick       # ~1 minute
//	go run ./bench -targets etcd
//
// It builds etcd's benchmark tool and an etcd server from the Go module
// proxy and Mosaic from this repository into a temp dir, starts each target
// on free loopback ports with a fresh data dir, runs the workloads, stops the
// server, prints a table and writes bench/results.md. See README.md.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Config is everything a run depends on.
type Config struct {
	Repo             string
	Out              string
	WorkDir          string
	Targets          []string
	Quick            bool
	Put1Total        int
	Put100Total      int
	RangeTotal       int
	Clients          int
	Conns            int
	ValSize          int
	KeySize          int
	KeySpace         int
	Ranges           int
	RangeKey         string
	EtcdVersion      string
	BenchmarkVersion string
	WorkloadTimeout  time.Duration
	ReadyTimeout     time.Duration
	Rounds           int
	Keep             bool
	NoWrite          bool
	// Watch adds the watch workloads (bench/watch.go).
	Watch bool
}

var allTargets = []string{"etcd", "mosaic-1", "mosaic-8"}

func main() {
	cfg := &Config{}
	var targets string
	flag.StringVar(&targets, "targets", strings.Join(allTargets, ","), "comma-separated targets: etcd, mosaic-1 (one range), mosaic-8 (split into -ranges ranges)")
	flag.BoolVar(&cfg.Quick, "quick", false, "small op counts (~1 minute in total once built); overrides the -*-total defaults")
	flag.IntVar(&cfg.Put1Total, "put1-total", 20000, "ops for the 1-client put workload (~10 s on etcd on a 2-core VM)")
	flag.IntVar(&cfg.Put100Total, "put100-total", 150000, "ops for the many-client put workload")
	flag.IntVar(&cfg.RangeTotal, "range-total", 300000, "ops for each range workload")
	flag.IntVar(&cfg.Clients, "clients", 100, "gRPC clients for the concurrent workloads")
	flag.IntVar(&cfg.Conns, "conns", 10, "gRPC connections for the concurrent workloads (etcd's docs use 1 per 10 clients)")
	flag.IntVar(&cfg.ValSize, "val-size", 256, "value size in bytes")
	flag.IntVar(&cfg.KeySpace, "key-space-size", 100000, "benchmark --key-space-size (random keys)")
	flag.IntVar(&cfg.Ranges, "ranges", 8, "number of ranges for the mosaic-8 target")
	flag.StringVar(&cfg.RangeKey, "range-key", "mosaic-bench-range-key", "existing key the range workloads read (written before them)")
	flag.StringVar(&cfg.EtcdVersion, "etcd-version", "v3.7.3", "version of go.etcd.io/etcd/server/v3 to build")
	flag.StringVar(&cfg.BenchmarkVersion, "benchmark-version", "v3.6.8", "version of go.etcd.io/etcd/v3 whose tools/benchmark to build (the proxy has no v3.7 of that module)")
	flag.DurationVar(&cfg.WorkloadTimeout, "workload-timeout", 3*time.Minute, "kill a workload that runs longer than this")
	flag.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 60*time.Second, "how long a server may take to log "+fmt.Sprintf("%q", readyLine))
	flag.StringVar(&cfg.Repo, "repo", "", "Mosaic repository root (default: found from the working directory)")
	flag.StringVar(&cfg.Out, "out", "", "results file (default <repo>/bench/results.md)")
	flag.StringVar(&cfg.WorkDir, "workdir", "", "parent of the temp dir for binaries, data dirs and logs (default $TMPDIR)")
	flag.IntVar(&cfg.Rounds, "rounds", 1, "run every target this many times, interleaved; report medians")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the temp dir (binaries, data, logs, raw outputs)")
	flag.BoolVar(&cfg.NoWrite, "no-write", false, "print the table only; don't write the results file")
	flag.BoolVar(&cfg.Watch, "watch", true, "also run the watch workloads (etcd's benchmark watch-latency: 1, 1,000 and 10,000 watchers)")
	flag.Parse()
	cfg.KeySize = 8
	cfg.Targets = splitList(targets)
	if cfg.Quick {
		setIfDefault("put1-total", &cfg.Put1Total, 3000)
		setIfDefault("put100-total", &cfg.Put100Total, 30000)
		setIfDefault("range-total", &cfg.RangeTotal, 40000)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func setIfDefault(name string, p *int, v int) {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	if !set {
		*p = v
	}
}

func splitList(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05")+" "+format+"\n", args...)
}

func run(cfg *Config) error {
	for _, t := range cfg.Targets {
		if !contains(allTargets, t) {
			return fmt.Errorf("unknown target %q (want some of %s)", t, strings.Join(allTargets, ","))
		}
	}
	if len(cfg.Targets) == 0 {
		return errors.New("no targets")
	}
	if cfg.Rounds < 1 {
		cfg.Rounds = 1
	}
	if cfg.Repo == "" {
		r, err := findRepo()
		if err != nil {
			return err
		}
		cfg.Repo = r
	}
	if cfg.Out == "" {
		cfg.Out = filepath.Join(cfg.Repo, "bench", "results.md")
	}

	// Ctrl-C / SIGTERM: cancel, so running workloads are killed and every
	// server is stopped by the deferred cleanups below.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	work, err := os.MkdirTemp(cfg.WorkDir, "mosaic-bench-")
	if err != nil {
		return err
	}
	if cfg.Keep {
		logf("temp dir (kept): %s", work)
	} else {
		defer os.RemoveAll(work)
	}

	needMosaic := contains(cfg.Targets, "mosaic-1") || contains(cfg.Targets, "mosaic-8")
	b := &builder{log: logf}
	started := time.Now()
	rev := mosaicRev(cfg.Repo) // just before building it
	bins, err := BuildAll(ctx, b, cfg, filepath.Join(work, "bin"), contains(cfg.Targets, "etcd"), needMosaic)
	if err != nil {
		return err
	}
	logf("built in %v", time.Since(started).Round(time.Second))

	rep := &Report{
		Config:     cfg,
		Started:    started,
		Machine:    machineInfo(rev),
		BuildCmds:  b.commands,
		Invocation: strings.TrimSpace("go run ./bench " + strings.Join(os.Args[1:], " ")),
	}
	// Rounds interleave the targets (etcd, mosaic-1, mosaic-8, etcd, ...) so
	// that background load on the machine hits them alike; the report shows
	// the median of each metric over the rounds.
	rounds := make(map[string][]*TargetResult)
	for round := 1; round <= cfg.Rounds; round++ {
		for _, name := range cfg.Targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			tr := &TargetResult{Name: name, Round: round}
			rounds[name] = append(rounds[name], tr)
			if strings.HasPrefix(name, "mosaic") && bins.MosaicErr != nil {
				tr.Err = "Mosaic did not build: " + firstLine(bins.MosaicErr.Error())
				logf("%s: skipped: %v", name, bins.MosaicErr)
				continue
			}
			if cfg.Rounds > 1 {
				logf("%s: round %d of %d", name, round, cfg.Rounds)
			}
			runTarget(ctx, cfg, bins, work, tr)
		}
	}
	for _, name := range cfg.Targets {
		rep.Targets = append(rep.Targets, Aggregate(cfg, rounds[name]))
	}
	rep.Finished = time.Now()

	fmt.Println(rep.Table())
	if !cfg.NoWrite {
		if err := os.WriteFile(cfg.Out, []byte(rep.Markdown()), 0o644); err != nil {
			return err
		}
		logf("wrote %s", cfg.Out)
	}
	return nil
}

// runTarget starts one target, runs every workload on it and stops it.
// Failures are recorded in tr, not returned, so other targets still run.
func runTarget(ctx context.Context, cfg *Config, bins *Binaries, work string, tr *TargetResult) {
	bin := bins.Etcd
	if strings.HasPrefix(tr.Name, "mosaic") {
		bin = bins.Mosaic
	}
	logf("%s: starting %s", tr.Name, bin)
	srv, err := StartServer(tr.Name, bin, work)
	if err != nil {
		tr.Err = "start: " + err.Error()
		return
	}
	defer func() {
		if err := srv.Stop(15 * time.Second); err != nil {
			tr.Notes = append(tr.Notes, err.Error())
		}
		logf("%s: stopped", tr.Name)
	}()
	tr.ServerCmd = strings.Join(srv.Args, " ")
	tr.LoadBefore = loadAvg()
	if err := srv.WaitReady(ctx, cfg.ReadyTimeout); err != nil {
		tr.Err = "not ready: " + firstLine(err.Error())
		logf("%s: %v", tr.Name, err)
		return
	}
	logf("%s: ready after %v at %s", tr.Name, srv.ReadyAfter.Round(time.Millisecond), srv.ClientURL)
	tr.ReadyAfter = srv.ReadyAfter

	// Write the key the range workloads read (and check the server serves).
	seedArgs := []string{"-endpoint", srv.Endpoint, "-key", cfg.RangeKey, "-val-size", fmt.Sprint(cfg.ValSize), "-wait", "30s"}
	tr.Commands = append(tr.Commands, "benchseed "+strings.Join(seedArgs, " "))
	out, errOut, err := runBounded(ctx, time.Minute, bins.Seed, seedArgs...)
	if err != nil {
		tr.Err = fmt.Sprintf("seeding %q: %v: %s", cfg.RangeKey, err, firstLine(errOut))
		logf("%s: %s\n%s", tr.Name, tr.Err, srv.LogTail(20))
		return
	}
	tr.Seed = strings.TrimSpace(out)
	logf("%s: %s", tr.Name, tr.Seed)

	if tr.Name == "mosaic-8" {
		if err := splitRanges(ctx, cfg, bins, srv, tr); err != nil {
			tr.Err = "split: " + err.Error()
			logf("%s: %s", tr.Name, tr.Err)
			return
		}
	}

	for _, w := range Workloads(cfg) {
		if ctx.Err() != nil {
			tr.Err = "interrupted"
			return
		}
		args := append([]string{"--endpoints", srv.Endpoint, "--precise"}, w.Args...)
		wr := &WorkloadResult{Workload: w, Cmd: "benchmark " + strings.Join(args, " ")}
		tr.Workloads = append(tr.Workloads, wr)
		logf("%s: %s: %s", tr.Name, w.Name, wr.Cmd)
		t0 := time.Now()
		// A server that dies mid-workload ends the workload at once (the
		// tool would otherwise retry until the timeout).
		wctx, wcancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-srv.exited:
				wcancel()
			case <-wctx.Done():
			}
		}()
		stdout, stderr, err := runBounded(wctx, cfg.WorkloadTimeout, bins.Benchmark, args...)
		wcancel()
		wr.Wall = time.Since(t0)
		_ = os.WriteFile(filepath.Join(work, tr.Name+"-"+w.Name+".out"), []byte(stdout+"\n--- stderr ---\n"+stderr), 0o644)
		parsed := stdout
		if strings.HasPrefix(w.Name, "watch-") {
			// Events delivered, not the puts that caused them.
			_, parsed = SplitWatchOutput(stdout)
		}
		res, perr := ParseBenchmarkOutput(parsed)
		switch {
		case err != nil && !srv.Alive():
			wr.Err = "server exited mid-workload; benchmark killed"
		case err != nil:
			wr.Err = err.Error()
			if perr == nil {
				wr.Result = res
			}
		case perr != nil:
			wr.Err = "parse: " + perr.Error()
		default:
			wr.Result = res
		}
		if res != nil && res.ErrorCount() > 0 {
			wr.Err = strings.TrimPrefix(wr.Err+"; ", "; ") + fmt.Sprintf("%d failed requests: %s", res.ErrorCount(), res.ErrorSummary())
		}
		if wr.Result != nil {
			p99, _ := wr.Result.P("99")
			logf("%s: %s: %.0f ops/s, avg %s, p99 %s (%v)", tr.Name, w.Name, wr.Result.RPS, ms(wr.Result.Average), ms(p99), wr.Wall.Round(100*time.Millisecond))
		}
		if wr.Err != "" {
			logf("%s: %s: %s", tr.Name, w.Name, wr.Err)
		}
		if !srv.Alive() {
			_, exitErr := srv.Exited()
			tr.Err = fmt.Sprintf("server exited during %s (%v)", w.Name, exitErr)
			if l := srv.FatalLine(); l != "" {
				tr.Err += ": " + l
			}
			logf("%s: %s; log tail:\n%s", tr.Name, tr.Err, srv.LogTail(30))
			return
		}
	}
	if tr.Name == "mosaic-8" {
		// Where the puts went (informational).
		if out, _, err := runBounded(ctx, time.Minute, bins.Mosaicctl, "--endpoints", srv.ClientURL, "range", "list"); err == nil {
			tr.RangeListAfter = strings.TrimSpace(out)
		}
	}
}

// splitRanges splits the keyspace at cfg.Ranges-1 keys spread over the
// benchmark's key space, with mosaicctl.
func splitRanges(ctx context.Context, cfg *Config, bins *Binaries, srv *Server, tr *TargetResult) error {
	splits := SplitKeys(cfg.KeySpace, cfg.KeySize, cfg.Ranges)
	tr.Splits = splits
	tr.Spread = Spread(cfg.KeySpace, cfg.KeySize, splits)
	for _, k := range splits {
		// The key goes to mosaicctl as raw bytes in one argv element ("--"
		// first if it could be taken for a flag).
		args := []string{"--endpoints", srv.ClientURL, "range", "split"}
		shown := fmt.Sprintf("mosaicctl --endpoints %s range split ", srv.ClientURL)
		if bytes.HasPrefix(k, []byte("-")) {
			args = append(args, "--")
			shown += "-- "
		}
		args = append(args, string(k))
		tr.Commands = append(tr.Commands, shown+"$'"+shellEscape(k)+"'")
		out, errOut, err := runBounded(ctx, time.Minute, bins.Mosaicctl, args...)
		if err != nil {
			return fmt.Errorf("mosaicctl range split %q: %v: %s", k, err, strings.TrimSpace(errOut+" "+out))
		}
	}
	// Show the range table, if mosaicctl can list it (informational).
	out, errOut, err := runBounded(ctx, time.Minute, bins.Mosaicctl, "--endpoints", srv.ClientURL, "range", "list")
	if err == nil {
		tr.RangeList = strings.TrimSpace(out)
	} else {
		tr.Notes = append(tr.Notes, "mosaicctl range list: "+firstLine(strings.TrimSpace(errOut+" "+err.Error())))
	}
	return nil
}

// shellEscape renders a key for bash's $'...' quoting.
func shellEscape(k []byte) string {
	var sb strings.Builder
	for _, c := range k {
		if c >= 0x20 && c < 0x7f && c != '\'' && c != '\\' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, `\x%02x`, c)
		}
	}
	return sb.String()
}

// Workload is one benchmark invocation, minus endpoints.
type Workload struct {
	Name  string
	Title string
	Args  []string
}

// Workloads are the workloads, in the order they run: four KV workloads,
// then (with cfg.Watch) the watch workloads.
func Workloads(cfg *Config) []Workload {
	put := func(total int) []string {
		return []string{"put", "--val-size", fmt.Sprint(cfg.ValSize), "--key-size", fmt.Sprint(cfg.KeySize),
			"--key-space-size", fmt.Sprint(cfg.KeySpace), "--total", fmt.Sprint(total)}
	}
	rng := func(c string) []string {
		return []string{"range", cfg.RangeKey, "--consistency", c, "--total", fmt.Sprint(cfg.RangeTotal)}
	}
	many := []string{"--clients", fmt.Sprint(cfg.Clients), "--conns", fmt.Sprint(cfg.Conns)}
	ws := []Workload{
		{"put-1", "put, 1 client", append([]string{"--clients", "1", "--conns", "1"}, put(cfg.Put1Total)...)},
		{"put-many", fmt.Sprintf("put, %d clients", cfg.Clients), append(many, put(cfg.Put100Total)...)},
		{"range-l", fmt.Sprintf("range linearizable, %d clients", cfg.Clients), append(many, rng("l")...)},
		{"range-s", fmt.Sprintf("range serializable, %d clients", cfg.Clients), append(many, rng("s")...)},
	}
	if cfg.Watch {
		ws = append(ws, WatchWorkloads(cfg)...)
	}
	return ws
}

func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/mosaic-kv/mosaic\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("can't find the Mosaic repository root above the working directory; use -repo")
		}
		dir = parent
	}
}

// Machine describes where the numbers were measured.
type Machine struct {
	MosaicRev string // commit of the repository the Mosaic binaries were built from
	NProc     int
	CPU       string
	GoVersion string
	Kernel    string
	MemTotal  string
}

func machineInfo(mosaicRev string) Machine {
	m := Machine{NProc: runtime.NumCPU(), MosaicRev: mosaicRev}
	if out, err := exec.Command("nproc").Output(); err == nil {
		fmt.Sscan(string(out), &m.NProc)
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				m.MemTotal = strings.TrimSpace(strings.TrimPrefix(l, "MemTotal:"))
			}
		}
	}
	return m
}

// loadAvg is the 1-minute load average: the machine may be shared.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// mosaicRev describes the source the Mosaic binaries were built from: the
// commit, and how many files differed from it (the build uses the working
// tree as it is).
func mosaicRev(repo string) string {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	rev := strings.TrimSpace(string(out))
	st, err := exec.Command("git", "-C", repo, "status", "--porcelain").Output()
	if err == nil {
		if t := strings.TrimSpace(string(st)); t != "" {
			n := len(strings.Split(t, "\n"))
			rev += fmt.Sprintf(" plus uncommitted changes in the working tree (%d paths in git status)", n)
		}
	}
	return rev
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}
