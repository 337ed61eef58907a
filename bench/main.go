// Command bench compares Mosaic with etcd using etcd's own benchmark tool.
//
// From the repository root:
//
//	go run ./bench              # full run: etcd, Mosaic 1 range, Mosaic 8 ranges
//	go run ./bench -quick       # ~1 minute
//	go run ./bench -targets etcd
//	go run ./bench -targets etcd-3,mosaic-3   # 3-member clusters: bench/cluster-results.md
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
	// ClusterOut is where the 3-member targets' report goes.
	ClusterOut string
	// Watch adds the watch workloads (bench/watch.go).
	Watch bool
	// Only, when set, keeps just these workloads (by name).
	Only []string
}

// Single-node targets (the default) and 3-member cluster targets.
var (
	singleTargets  = []string{"etcd", "mosaic-1", "mosaic-8"}
	clusterTargets = []string{"etcd-3", "mosaic-3"}
	allTargets     = append(append([]string{}, singleTargets...), clusterTargets...)
)

// clusterSize is the number of members of the cluster targets.
const clusterSize = 3

// isCluster reports whether a target is a 3-member cluster.
func isCluster(target string) bool { return contains(clusterTargets, target) }

// isEtcd reports whether a target is etcd (a baseline).
func isEtcd(target string) bool { return target == "etcd" || target == "etcd-3" }

// baseline is the etcd target a target is compared with.
func baseline(target string) string {
	if isCluster(target) {
		return "etcd-3"
	}
	return "etcd"
}

func main() {
	cfg := &Config{}
	var targets string
	flag.StringVar(&targets, "targets", strings.Join(singleTargets, ","), "comma-separated targets: etcd, mosaic-1 (one range), mosaic-8 (split into -ranges ranges); etcd-3, mosaic-3 (3-member clusters); \"all\" for all five")
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
	flag.StringVar(&cfg.Out, "out", "", "results file of the single-node targets (default <repo>/bench/results.md)")
	flag.StringVar(&cfg.ClusterOut, "cluster-out", "", "results file of the 3-member targets (default <repo>/bench/cluster-results.md)")
	flag.StringVar(&cfg.WorkDir, "workdir", "", "parent of the temp dir for binaries, data dirs and logs (default $TMPDIR)")
	flag.IntVar(&cfg.Rounds, "rounds", 1, "run every target this many times, interleaved; report medians")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the temp dir (binaries, data, logs, raw outputs)")
	flag.BoolVar(&cfg.NoWrite, "no-write", false, "print the table only; don't write the results file")
	var only string
	flag.StringVar(&only, "only", "", "comma-separated workload names to run alone (put-1, put-many, range-l, range-s, watch-1, watch-1000, watch-10000); use with -no-write")
	flag.BoolVar(&cfg.Watch, "watch", true, "also run the watch workloads (etcd's benchmark watch-latency: 1, 1,000 and 10,000 watchers)")
	flag.Parse()
	cfg.KeySize = 8
	cfg.Targets = splitList(targets)
	cfg.Only = splitList(only)
	if len(cfg.Targets) == 1 && cfg.Targets[0] == "all" {
		cfg.Targets = allTargets
	}
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
	if cfg.ClusterOut == "" {
		cfg.ClusterOut = filepath.Join(cfg.Repo, "bench", "cluster-results.md")
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

	needMosaic, needEtcd := false, false
	for _, t := range cfg.Targets {
		needMosaic = needMosaic || !isEtcd(t)
		needEtcd = needEtcd || isEtcd(t)
	}
	b := &builder{log: logf}
	started := time.Now()
	rev := mosaicRev(cfg.Repo) // just before building it
	bins, err := BuildAll(ctx, b, cfg, filepath.Join(work, "bin"), needEtcd, needMosaic)
	if err != nil {
		return err
	}
	logf("built in %v", time.Since(started).Round(time.Second))

	machine := machineInfo(rev)
	invocation := strings.TrimSpace("go run ./bench " + strings.Join(os.Args[1:], " "))
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
			if !isEtcd(name) && bins.MosaicErr != nil {
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
	finished := time.Now()
	// One report for the single-node targets, one for the clusters: each
	// compares Mosaic with the etcd of its own shape.
	for _, cluster := range []bool{false, true} {
		rep := &Report{Config: cfg, Started: started, Finished: finished, Machine: machine,
			BuildCmds: b.commands, Invocation: invocation, Cluster: cluster}
		for _, name := range cfg.Targets {
			if isCluster(name) == cluster {
				rep.Targets = append(rep.Targets, Aggregate(cfg, rounds[name]))
			}
		}
		if len(rep.Targets) == 0 {
			continue
		}
		fmt.Println(rep.Table())
		out := cfg.Out
		if cluster {
			out = cfg.ClusterOut
		}
		if !cfg.NoWrite {
			if err := os.WriteFile(out, []byte(rep.Markdown()), 0o644); err != nil {
				return err
			}
			logf("wrote %s", out)
		}
	}
	return nil
}

// runTarget starts one target, runs every workload on it and stops it.
// Failures are recorded in tr, not returned, so other targets still run.
func runTarget(ctx context.Context, cfg *Config, bins *Binaries, work string, tr *TargetResult) {
	bin := bins.Etcd
	if !isEtcd(tr.Name) {
		bin = bins.Mosaic
	}
	n := 1
	if isCluster(tr.Name) {
		n = clusterSize
	}
	logf("%s: starting %d× %s", tr.Name, n, bin)
	srv, err := StartCluster(tr.Name, bin, work, n)
	if err != nil {
		tr.Err = "start: " + err.Error()
		return
	}
	defer func() {
		if n > 1 {
			// What the members logged while they ran (before stopping).
			tr.Notes = append(tr.Notes, srv.LogSummary()...)
		}
		if err := srv.Stop(15 * time.Second); err != nil {
			tr.Notes = append(tr.Notes, err.Error())
		}
		logf("%s: stopped", tr.Name)
	}()
	tr.ServerCmd = srv.Args()
	tr.LoadBefore = loadAvg()
	ready, err := srv.WaitReady(ctx, cfg.ReadyTimeout)
	if err != nil {
		tr.Err = "not ready: " + firstLine(err.Error())
		logf("%s: %v", tr.Name, err)
		return
	}
	logf("%s: ready after %v at %s", tr.Name, ready.Round(time.Millisecond), srv.EndpointList())
	tr.ReadyAfter = ready

	// Write the key the range workloads read through every member (which
	// also waits until a put succeeds through each) and read it back.
	seedArgs := []string{"-endpoints", srv.EndpointList(), "-key", cfg.RangeKey, "-val-size", fmt.Sprint(cfg.ValSize), "-wait", "30s"}
	tr.Commands = append(tr.Commands, "benchseed "+strings.Join(seedArgs, " "))
	out, errOut, err := runBounded(ctx, 2*time.Minute, bins.Seed, seedArgs...)
	if err != nil {
		tr.Err = fmt.Sprintf("seeding %q: %v: %s", cfg.RangeKey, err, strings.Join(strings.Fields(errOut), " "))
		logf("%s: %s\n%s", tr.Name, tr.Err, srv.LogTail(20))
		return
	}
	tr.Seed = strings.TrimSpace(out)
	logf("%s: %s", tr.Name, tr.Seed)

	if tr.Name == "mosaic-8" {
		if err := splitRanges(ctx, cfg, bins, srv.Members[0], tr); err != nil {
			tr.Err = "split: " + err.Error()
			logf("%s: %s", tr.Name, tr.Err)
			return
		}
	}

	for _, w := range TargetWorkloads(cfg, tr.Name) {
		if ctx.Err() != nil {
			tr.Err = "interrupted"
			return
		}
		args := append([]string{"--endpoints", srv.EndpointList(), "--precise"}, w.Args...)
		wr := &WorkloadResult{Workload: w, Cmd: "benchmark " + strings.Join(args, " ")}
		tr.Workloads = append(tr.Workloads, wr)
		logf("%s: %s: %s", tr.Name, w.Name, wr.Cmd)
		t0 := time.Now()
		cpu0 := srv.CPUSeconds()
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
		var rssPeak <-chan int64
		stopRSS := make(chan struct{})
		if n == 1 && strings.HasPrefix(w.Name, "watch-") {
			wr.RSSBefore, _ = srv.Members[0].RSSKB()
			rssPeak = srv.Members[0].sampleRSS(stopRSS)
		}
		stdout, stderr, err := runBounded(wctx, cfg.WorkloadTimeout, bins.Benchmark, args...)
		wcancel()
		close(stopRSS)
		if rssPeak != nil {
			wr.RSSPeak = <-rssPeak
		}
		wr.Wall = time.Since(t0)
		var cpu1 []float64
		if n > 1 && srv.Alive() {
			cpu1 = srv.CPUSeconds()
			wr.CPU = cpuNote(srv, cpu0, cpu1)
		}
		_ = os.WriteFile(filepath.Join(work, fmt.Sprintf("%s-%s-round%d.out", tr.Name, w.Name, tr.Round)), []byte(stdout+"\n--- stderr ---\n"+stderr), 0o644)
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
		if wr.CPU != "" && wr.Result != nil && wr.Result.RPS > 0 {
			total := 0.0
			for i := range cpu1 {
				total += cpu1[i] - cpu0[i]
			}
			if ops := wr.Result.RPS * wr.Result.TotalSecs; ops > 0 {
				wr.CPU += fmt.Sprintf("; %.3f ms of member CPU per op", total*1000/ops)
			}
		}
		if wr.CPU != "" {
			logf("%s: %s: %s", tr.Name, w.Name, wr.CPU)
		}
		if wr.Result != nil {
			p99, _ := wr.Result.P("99")
			logf("%s: %s: %.0f ops/s, avg %s, p99 %s (%v)", tr.Name, w.Name, wr.Result.RPS, ms(wr.Result.Average), ms(p99), wr.Wall.Round(100*time.Millisecond))
		}
		if wr.Err != "" {
			logf("%s: %s: %s", tr.Name, w.Name, wr.Err)
			if n > 1 {
				// What the members said about it.
				logf("%s: benchmark stderr tail:\n%s\nmember log tails:\n%s", tr.Name, tail(stderr, 10), srv.LogTail(15))
			}
		}
		if !srv.Alive() {
			for _, m := range srv.Dead() {
				_, exitErr := m.Exited()
				e := fmt.Sprintf("%s exited during %s (%v)", m.Name, w.Name, exitErr)
				if l := m.FatalLine(); l != "" {
					e += ": " + l
				}
				tr.Err = strings.TrimPrefix(tr.Err+"; "+e, "; ")
			}
			logf("%s: %s; log tail:\n%s", tr.Name, tr.Err, srv.LogTail(30))
			return
		}
	}
	if tr.Name == "mosaic-8" {
		// Where the puts went (informational).
		if out, _, err := runBounded(ctx, time.Minute, bins.Mosaicctl, "--endpoints", srv.Members[0].ClientURL, "range", "list"); err == nil {
			tr.RangeListAfter = strings.TrimSpace(out)
		}
	}
}

// cpuNote describes the CPU time each member used between two readings.
func cpuNote(c *Cluster, before, after []float64) string {
	var parts []string
	total := 0.0
	for i, m := range c.Members {
		d := after[i] - before[i]
		total += d
		parts = append(parts, fmt.Sprintf("%s %.1f s", strings.TrimPrefix(m.Name, c.Name+"-"), d))
	}
	return fmt.Sprintf("member CPU %s (total %.1f s)", strings.Join(parts, ", "), total)
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

// clusterWorkloads are the workloads the 3-member targets run.
var clusterWorkloads = []string{"put-many", "range-l", "range-s"}

// TargetWorkloads are the workloads a target runs: all of Workloads on a
// single node; put at many clients and the two range workloads, with the
// same arguments, on a cluster.
func TargetWorkloads(cfg *Config, target string) []Workload {
	var out []Workload
	for _, w := range Workloads(cfg) {
		if isCluster(target) && !contains(clusterWorkloads, w.Name) {
			continue
		}
		if len(cfg.Only) > 0 && !contains(cfg.Only, w.Name) {
			continue
		}
		out = append(out, w)
	}
	return out
}

// runsWorkload reports whether a target runs a workload.
func runsWorkload(cfg *Config, target, workload string) bool {
	for _, w := range TargetWorkloads(cfg, target) {
		if w.Name == workload {
			return true
		}
	}
	return false
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
