package main

// These tests are fast and offline: they never build or start a server.
// The benchmark itself only runs through `go run ./bench`.

import (
	"bytes"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseRealOutput1Client(t *testing.T) {
	// Captured from `benchmark --clients 1 --conns 1 put --val-size 256
	// --key-space-size 100000 --total 2000` against etcd 3.7.3, with the
	// progress bar (stderr, \r-separated) mixed in.
	b, err := os.ReadFile("testdata/put_1client.txt")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseBenchmarkOutput(string(b))
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("RPS", r.RPS, 1991.6503)
	check("Average", r.Average, 0.0005)
	check("Total", r.TotalSecs, 1.0042)
	check("Slowest", r.Slowest, 0.0031)
	p99, _ := r.P("99")
	check("p99", p99, 0.0011)
	p999, _ := r.P("99.9")
	check("p99.9", p999, 0.0023)
	p50, _ := r.P("50")
	check("p50", p50, 0.0005)
	if r.ErrorCount() != 0 {
		t.Errorf("errors = %v", r.Errors)
	}
}

func TestParseRealOutputPrecise(t *testing.T) {
	// Captured from `benchmark --clients 100 --conns 10 --precise put ...`.
	b, err := os.ReadFile("testdata/put_100clients_precise.txt")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseBenchmarkOutput(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if r.RPS != 17613.387836332167 || r.Average != 0.005562358288060053 {
		t.Errorf("RPS %v avg %v", r.RPS, r.Average)
	}
	if p99, _ := r.P("99"); p99 != 0.013265074 {
		t.Errorf("p99 %v", p99)
	}
}

func TestParseErrors(t *testing.T) {
	out := "bench with linearizable range\n" +
		"\nSummary:\n  Total:\t2.5 secs.\n  Slowest:\t0.1 secs.\n  Fastest:\t0.001 secs.\n" +
		"  Average:\t0.002 secs.\n  Stddev:\t0.001 secs.\n  Requests/sec:\t4000.5\n" +
		"\nLatency distribution:\n  99% in 0.01 secs.\n" +
		"\nError distribution:\n  [3]\trpc error: code = Unavailable desc = x\n  [2]\tcontext deadline exceeded\n"
	r, err := ParseBenchmarkOutput(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.ErrorCount() != 5 || r.RPS != 4000.5 {
		t.Errorf("errors %v rps %v", r.Errors, r.RPS)
	}
	if s := r.ErrorSummary(); !strings.HasPrefix(s, "3× rpc error") {
		t.Errorf("summary %q", s)
	}

	// All requests failed: no summary, only errors.
	r, err = ParseBenchmarkOutput("\nError distribution:\n  [10]\tetcdserver: request timed out\n")
	if err == nil || r == nil || r.ErrorCount() != 10 {
		t.Errorf("all-failed: r=%v err=%v", r, err)
	}
	if _, err := ParseBenchmarkOutput("panic: boom\n"); err == nil {
		t.Error("garbage parsed")
	}
}

func TestBenchmarkKeyMatchesTool(t *testing.T) {
	// binary.PutVarint zig-zag: 0 -> 0x00, 1 -> 0x02, 64 -> 0x80 0x01.
	for n, want := range map[int][]byte{
		0:  {0, 0, 0, 0, 0, 0, 0, 0},
		1:  {2, 0, 0, 0, 0, 0, 0, 0},
		64: {0x80, 1, 0, 0, 0, 0, 0, 0},
		65: {0x82, 1, 0, 0, 0, 0, 0, 0},
	} {
		if got := benchmarkKey(n, 8); !bytes.Equal(got, want) {
			t.Errorf("key %d = %x, want %x", n, got, want)
		}
	}
}

func TestSplitKeysSpread(t *testing.T) {
	splits := SplitKeys(100000, 8, 8)
	if len(splits) != 7 {
		t.Fatalf("%d splits: %x", len(splits), splits)
	}
	for i := 1; i < len(splits); i++ {
		if bytes.Compare(splits[i-1], splits[i]) >= 0 {
			t.Fatalf("splits not increasing: %x", splits)
		}
	}
	// Every range holds 12.5% ± 1.25% of the key space.
	for i, c := range Spread(100000, 8, splits) {
		if c < 11250 || c > 13750 {
			t.Errorf("range %d holds %d keys; splits %x", i, c, splits)
		}
	}
	// For this key space the split keys are single bytes 0x90..0xf0.
	if !bytes.Equal(splits[0], []byte{0x90}) || !bytes.Equal(splits[6], []byte{0xf0}) {
		t.Errorf("splits %x", splits)
	}
	if SplitKeys(100000, 8, 1) != nil {
		t.Error("1 range needs no split")
	}
	if got := len(SplitKeys(1000, 8, 4)); got != 3 {
		t.Errorf("1000 keys, 4 ranges: %d splits", got)
	}
}

func TestReportMarkdown(t *testing.T) {
	cfg := &Config{Targets: allTargets, Clients: 100, Conns: 10, ValSize: 256, KeySize: 8, KeySpace: 100000, Ranges: 8,
		Put1Total: 10, Put100Total: 10, RangeTotal: 10, RangeKey: "k", EtcdVersion: "v3.7.3", BenchmarkVersion: "v3.6.8"}
	mk := func(rps, avg, p99 float64) *Result {
		return &Result{RPS: rps, Average: avg, Percentiles: map[string]float64{"99": p99}}
	}
	target := func(name string, scale float64) *TargetResult {
		tr := &TargetResult{Name: name, ServerCmd: name + " --name bench"}
		for _, w := range Workloads(cfg) {
			tr.Workloads = append(tr.Workloads, &WorkloadResult{Workload: w, Cmd: "benchmark " + w.Name, Result: mk(1000*scale, 0.001/scale, 0.002/scale)})
		}
		return tr
	}
	rep := &Report{Config: cfg, Started: time.Unix(0, 0), Finished: time.Unix(60, 0), Invocation: "go run ./bench",
		Targets: []*TargetResult{target("etcd", 1), target("mosaic-1", 2), target("mosaic-8", 0.5)}}
	md := rep.Markdown()
	for _, want := range []string{
		"| put, 100 clients | Mosaic, 1 range | 2000 | 0.500 ms | 1.000 ms | 2.00× | 0.50× | 0.50× |",
		"| put, 1 client | Mosaic, 8 ranges | 500 | 2.000 ms | 4.000 ms | 0.50× | 2.00× | 2.00× |",
		"| put throughput at 100 clients ≥ 1.0× etcd | **met** (2.000×) | **missed** (0.500×) |",
		"| single-client put latency (average) ≤ 1.5× etcd | **met** (0.500×) | **missed** (2.000×) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if tbl := rep.Table(); !strings.Contains(tbl, "range linearizable, 100 clients") {
		t.Errorf("table:\n%s", tbl)
	}
}

func TestAggregateMedians(t *testing.T) {
	cfg := &Config{Clients: 100, ValSize: 256, KeySize: 8, KeySpace: 100000, RangeKey: "k"}
	var rounds []*TargetResult
	for i, rps := range []float64{300, 100, 200} {
		tr := &TargetResult{Name: "etcd", Round: i + 1, LoadBefore: "1.0"}
		tr.Workloads = []*WorkloadResult{{Workload: Workloads(cfg)[0], Result: &Result{RPS: rps, Average: rps / 1e5, Percentiles: map[string]float64{"99": rps / 1e4}}}}
		rounds = append(rounds, tr)
	}
	rounds[2].Workloads[0].Err = "1 failed requests"
	agg := Aggregate(cfg, rounds)
	w := agg.workload("put-1")
	if w.Result.RPS != 200 || w.Result.Average != 0.002 || w.Result.Percentiles["99"] != 0.02 {
		t.Errorf("medians: %+v", w.Result)
	}
	if w.Err != "round 3: 1 failed requests" || len(agg.Rounds) != 3 {
		t.Errorf("err %q rounds %d", w.Err, len(agg.Rounds))
	}
}

func TestFatalLine(t *testing.T) {
	log := t.TempDir() + "/s.log"
	content := `{"level":"info","msg":"ready to serve client requests"}
{"level":"fatal","ts":"x","caller":"revision/oracle.go:361","msg":"persisting state failed","error":"too big","stacktrace":"a\nb"}
`
	if err := os.WriteFile(log, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{LogPath: log}
	want := `{"level":"fatal","ts":"x","caller":"revision/oracle.go:361","msg":"persisting state failed","error":"too big"}`
	if got := s.FatalLine(); got != want {
		t.Errorf("FatalLine = %q", got)
	}
}

func TestClusterReport(t *testing.T) {
	cfg := &Config{Targets: clusterTargets, Clients: 100, Conns: 10, ValSize: 256, KeySize: 8, KeySpace: 100000, Ranges: 8,
		Put1Total: 10, Put100Total: 10, RangeTotal: 10, RangeKey: "k", EtcdVersion: "v3.7.3", BenchmarkVersion: "v3.6.8", Watch: true}
	var names []string
	for _, w := range TargetWorkloads(cfg, "mosaic-3") {
		names = append(names, w.Name)
	}
	if strings.Join(names, ",") != "put-many,range-l,range-s" {
		t.Fatalf("cluster workloads %v", names)
	}
	if len(TargetWorkloads(cfg, "mosaic-1")) != len(Workloads(cfg)) {
		t.Fatal("single-node workloads changed")
	}
	target := func(name string, scale float64) *TargetResult {
		tr := &TargetResult{Name: name, ServerCmd: name + " --name bench-1\n" + name + " --name bench-2"}
		for _, w := range TargetWorkloads(cfg, name) {
			tr.Workloads = append(tr.Workloads, &WorkloadResult{Workload: w, Cmd: "benchmark " + w.Name,
				Result: &Result{RPS: 1000 * scale, Average: 0.001 / scale, Percentiles: map[string]float64{"99": 0.002 / scale}}})
		}
		return tr
	}
	rep := &Report{Config: cfg, Started: time.Unix(0, 0), Finished: time.Unix(60, 0), Invocation: "go run ./bench -targets etcd-3,mosaic-3",
		Cluster: true, Targets: []*TargetResult{Aggregate(cfg, []*TargetResult{target("etcd-3", 1)}), Aggregate(cfg, []*TargetResult{target("mosaic-3", 1.25)})}}
	md := rep.Markdown()
	for _, want := range []string{
		"# Mosaic vs etcd, 3-member clusters",
		"| put, 100 clients | Mosaic, 3 members | 1250 | 0.800 ms | 1.600 ms | 1.25× | 0.80× | 0.80× |",
		"| range serializable, 100 clients | etcd, 3 members | 1000 |",
		"| put throughput at 100 clients ≥ 1.0× 3-member etcd | **met** (1.250×) |",
		"| linearizable range throughput (100 clients) ≥ 1.0× 3-member etcd | **met** (1.250×) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	for _, absent := range []string{"put, 1 client", "watch", "single-client put latency"} {
		if strings.Contains(md, absent) {
			t.Errorf("markdown has %q:\n%s", absent, md)
		}
	}
}

func TestSummarizeLog(t *testing.T) {
	log := `{"level":"info","msg":"ready to serve client requests"}
{"level":"warn","msg":"apply request took too long","took":"120ms"}
not json
{"level":"warn","msg":"apply request took too long"}
{"level":"error","msg":"forward failed","error":"rpc error: code = Unavailable"}
`
	want := "2 warn, 1 error entries: 2× warn: apply request took too long; 1× error: forward failed (e.g. rpc error: code = Unavailable)"
	if got := summarizeLog(log, 3); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := summarizeLog(`{"level":"info","msg":"x"}`, 3); got != "" {
		t.Errorf("info only: %q", got)
	}
}

// TestWatchMemoryTable: the servers' memory during a watch workload is the
// median over rounds and is reported beside etcd's.
func TestWatchMemoryTable(t *testing.T) {
	cfg := &Config{Clients: 100, ValSize: 256, KeySize: 8, KeySpace: 100000, RangeKey: "k", Watch: true}
	agg := func(name string, peaks ...int64) *TargetResult {
		var rounds []*TargetResult
		for i, peak := range peaks {
			tr := &TargetResult{Name: name, Round: i + 1, LoadBefore: "1.0"}
			tr.Workloads = []*WorkloadResult{{Workload: WatchWorkloads(cfg)[2], RSSBefore: 10 << 10, RSSPeak: peak << 10,
				Result: &Result{RPS: 1, Percentiles: map[string]float64{}}}}
			rounds = append(rounds, tr)
		}
		return Aggregate(cfg, rounds)
	}
	rep := &Report{Config: cfg, Targets: []*TargetResult{agg("etcd", 100, 300, 200), agg("mosaic-1", 50, 150, 100)}}
	md := rep.Markdown()
	if !strings.Contains(md, "| watch latency, 10,000 watchers on 1,000 streams | Mosaic, 1 range | 10 | 100 | 0.50× |") ||
		!strings.Contains(md, "| watch latency, 10,000 watchers on 1,000 streams | etcd | 10 | 200 | – |") {
		t.Errorf("memory table missing or wrong:\n%s", md)
	}
}
