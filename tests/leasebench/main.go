// Command leasebench measures leases on etcd and Mosaic side by side, on one
// machine in one run: grant throughput, keep-alive throughput (request and
// answer on a LeaseKeepAlive stream, as etcd's `benchmark lease-keepalive`
// does), and a hold of many leases (100,000 by default) kept alive at their
// TTL/3 for a while, with the server's CPU and memory (RSS) sampled from
// /proc and the keep-alive latency measured. It writes a Markdown report.
//
// It lives in the tests module because it needs the etcd client and builds
// etcd's server main (go.etcd.io/etcd/server/v3, which that module requires)
// next to Mosaic's ./cmd/mosaic. From the repository root:
//
//	go run ./tests/leasebench                      # full run, writes bench/lease-results.md
//	go run ./tests/leasebench -hold-leases 10000 -hold 20s -no-write   # quick look
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

type config struct {
	repo        string
	out         string
	targets     []string
	clients     int
	conns       int
	grants      int
	keepalives  int
	holdLeases  int
	holdTTL     int64
	hold        time.Duration
	holdStreams int
	noWrite     bool
}

func main() {
	c := &config{}
	var targets string
	flag.StringVar(&c.repo, "repo", "", "repository root (default: found from the working directory)")
	flag.StringVar(&c.out, "out", "", "report file (default <repo>/bench/lease-results.md)")
	flag.StringVar(&targets, "targets", "etcd,mosaic", "targets, comma-separated")
	flag.IntVar(&c.clients, "clients", 100, "concurrent clients for the throughput workloads")
	flag.IntVar(&c.conns, "conns", 10, "gRPC connections shared by the clients")
	flag.IntVar(&c.grants, "grants", 20000, "grants in the grant workload")
	flag.IntVar(&c.keepalives, "keepalives", 100000, "keep-alives in the keep-alive workload")
	flag.IntVar(&c.holdLeases, "hold-leases", 100000, "leases in the hold")
	flag.Int64Var(&c.holdTTL, "hold-ttl", 30, "TTL of the held leases (renewed every TTL/3)")
	flag.DurationVar(&c.hold, "hold", 60*time.Second, "how long the leases are held")
	flag.IntVar(&c.holdStreams, "hold-streams", 100, "keep-alive streams for the hold")
	flag.BoolVar(&c.noWrite, "no-write", false, "print only")
	flag.Parse()
	c.targets = strings.Split(targets, ",")
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "leasebench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/mosaic-kv/mosaic\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the Mosaic repository (use -repo)")
		}
		dir = parent
	}
}

type result struct {
	target    string
	grantRPS  float64
	grantLat  latencies
	kaRPS     float64
	kaLat     latencies
	holdN     int
	holdSetup time.Duration
	holdLat   latencies
	holdCPU   float64 // CPU seconds per wall second during the hold
	rssIdle   int64   // kB before the hold's leases
	rssHold   int64   // kB at the end of the hold
	leftAfter int     // leases listed at the end of the hold
	holdErrs  int64
	err       error
}

func run(c *config) error {
	if c.repo == "" {
		r, err := findRepo()
		if err != nil {
			return err
		}
		c.repo = r
	}
	if c.out == "" {
		c.out = filepath.Join(c.repo, "bench", "lease-results.md")
	}
	work, err := os.MkdirTemp("", "leasebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bins := map[string]string{"etcd": filepath.Join(work, "etcd"), "mosaic": filepath.Join(work, "mosaic")}
	build := func(dir, out, pkg string) error {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
		return nil
	}
	logf("building etcd (go.etcd.io/etcd/server/v3) and Mosaic")
	if err := build(filepath.Join(c.repo, "tests"), bins["etcd"], "go.etcd.io/etcd/server/v3"); err != nil {
		return err
	}
	if err := build(c.repo, bins["mosaic"], "./cmd/mosaic"); err != nil {
		return err
	}
	var results []*result
	for _, t := range c.targets {
		r := &result{target: t}
		results = append(results, r)
		r.err = runTarget(c, bins[t], work, r)
		if r.err != nil {
			logf("%s: %v", t, r.err)
		}
	}
	rep := report(c, results)
	fmt.Println(rep)
	if !c.noWrite {
		return os.WriteFile(c.out, []byte(rep), 0o644)
	}
	return nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func runTarget(c *config, bin, work string, r *result) error {
	cu := fmt.Sprintf("http://127.0.0.1:%d", freePort())
	pu := fmt.Sprintf("http://127.0.0.1:%d", freePort())
	cmd := exec.Command(bin, "--name", "bench", "--data-dir", filepath.Join(work, r.target+"-data"),
		"--listen-client-urls", cu, "--advertise-client-urls", cu, "--listen-peer-urls", pu,
		"--initial-advertise-peer-urls", pu, "--initial-cluster", "bench="+pu, "--initial-cluster-state", "new")
	logFile, err := os.Create(filepath.Join(work, r.target+".log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	pr, pw, _ := os.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return err
	}
	pw.Close()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			fmt.Fprintln(logFile, sc.Text())
			if strings.Contains(sc.Text(), "ready to serve client requests") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		return errors.New("not ready after 60s")
	}
	pid := cmd.Process.Pid
	logf("%s: ready (pid %d) at %s", r.target, pid, cu)

	clients := make([]*clientv3.Client, c.conns)
	for i := range clients {
		cl, err := clientv3.New(clientv3.Config{Endpoints: []string{cu}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		defer cl.Close()
		clients[i] = cl
	}
	lc := func(i int) pb.LeaseClient { return pb.NewLeaseClient(clients[i%len(clients)].ActiveConnection()) }
	ctx := context.Background()

	// 1. Grants: c.clients goroutines, generated ids, TTL 600.
	var next atomic.Int64
	lats := make([]latencies, c.clients)
	t0 := time.Now()
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := lc(i)
			for next.Add(1) <= int64(c.grants) {
				s := time.Now()
				if _, err := l.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 600}); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lats[i] = append(lats[i], time.Since(s))
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return fmt.Errorf("grant: %v", e)
	}
	r.grantRPS = float64(c.grants) / time.Since(t0).Seconds()
	r.grantLat = merge(lats)
	logf("%s: grants: %.0f/s, p50 %s p99 %s", r.target, r.grantRPS, r.grantLat.p(50), r.grantLat.p(99))

	// 2. Keep-alives: as etcd's `benchmark lease-keepalive`, each client renews a
	// lease of its own over and over, one request in flight per stream.
	next.Store(0)
	lats = make([]latencies, c.clients)
	t0 = time.Now()
	for i := range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := lc(i)
			g, err := l.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 600})
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			s, err := l.LeaseKeepAlive(ctx)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			for next.Add(1) <= int64(c.keepalives) {
				st := time.Now()
				if err := s.Send(&pb.LeaseKeepAliveRequest{ID: g.ID}); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				resp, err := s.Recv()
				if err != nil || resp.TTL <= 0 {
					firstErr.CompareAndSwap(nil, fmt.Errorf("keep-alive: %v (TTL %v)", err, resp.GetTTL()))
					return
				}
				lats[i] = append(lats[i], time.Since(st))
			}
			_ = s.CloseSend()
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return fmt.Errorf("keep-alive: %v", e)
	}
	r.kaRPS = float64(c.keepalives) / time.Since(t0).Seconds()
	r.kaLat = merge(lats)
	logf("%s: keep-alives: %.0f/s, p50 %s p99 %s", r.target, r.kaRPS, r.kaLat.p(50), r.kaLat.p(99))

	// Revoke what the workloads granted, so the hold starts from nothing.
	ls, err := lc(0).LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
	if err != nil {
		return err
	}
	ids := make(chan int64, len(ls.Leases))
	for _, l := range ls.Leases {
		ids <- l.ID
	}
	close(ids)
	for i := range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				_, _ = lc(i).LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
			}
		}()
	}
	wg.Wait()
	time.Sleep(2 * time.Second)
	r.rssIdle = rssKB(pid)

	// 3. The hold: grant holdLeases leases, then renew each every TTL/3 for c.hold
	// on holdStreams streams, spread evenly in time.
	t0 = time.Now()
	held := make([][]int64, c.holdStreams)
	next.Store(0)
	for i := range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > int64(c.holdLeases) {
					return
				}
				g, err := lc(i).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: c.holdTTL})
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				_ = g
				heldMu.Lock()
				held[int(n)%c.holdStreams] = append(held[int(n)%c.holdStreams], g.ID)
				heldMu.Unlock()
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return fmt.Errorf("hold grants: %v", e)
	}
	r.holdSetup = time.Since(t0)
	r.holdN = c.holdLeases
	logf("%s: %d leases granted in %s; holding them for %s", r.target, c.holdLeases, r.holdSetup.Round(time.Millisecond), c.hold)
	cpu0, wall0 := cpuSeconds(pid), time.Now()
	period := time.Duration(c.holdTTL) * time.Second / 3
	deadline := time.Now().Add(c.hold)
	lats = make([]latencies, c.holdStreams)
	var errs atomic.Int64
	for i := range c.holdStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := lc(i).LeaseKeepAlive(ctx)
			if err != nil {
				errs.Add(1)
				return
			}
			mine := held[i]
			if len(mine) == 0 {
				return
			}
			gap := period / time.Duration(len(mine))
			sent := make(chan time.Time, len(mine))
			done := make(chan struct{})
			go func() {
				defer close(done)
				for st := range sent {
					resp, err := s.Recv()
					if err != nil {
						errs.Add(1)
						return
					}
					if resp.TTL <= 0 {
						errs.Add(1)
					}
					lats[i] = append(lats[i], time.Since(st))
				}
			}()
			start := time.Now()
			for k := 0; time.Now().Before(deadline); k++ {
				if d := time.Until(start.Add(time.Duration(k) * gap)); d > 0 {
					time.Sleep(d)
				}
				st := time.Now()
				if err := s.Send(&pb.LeaseKeepAliveRequest{ID: mine[k%len(mine)]}); err != nil {
					errs.Add(1)
					break
				}
				sent <- st
			}
			close(sent)
			<-done
			_ = s.CloseSend()
		}()
	}
	wg.Wait()
	r.holdCPU = (cpuSeconds(pid) - cpu0) / time.Since(wall0).Seconds()
	r.rssHold = rssKB(pid)
	r.holdLat = merge(lats)
	r.holdErrs = errs.Load()
	ls, err = lc(0).LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
	if err != nil {
		return err
	}
	r.leftAfter = len(ls.Leases)
	logf("%s: hold: %d keep-alives (%.0f/s), p50 %s p99 %s, CPU %.2f cores, RSS %d MiB, %d leases left, %d errors",
		r.target, len(r.holdLat), float64(len(r.holdLat))/c.hold.Seconds(), r.holdLat.p(50), r.holdLat.p(99), r.holdCPU, r.rssHold/1024, r.leftAfter, r.holdErrs)
	return nil
}

var heldMu sync.Mutex

type latencies []time.Duration

func merge(ls []latencies) latencies {
	var all latencies
	for _, l := range ls {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return all
}

func (l latencies) p(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(float64(len(l)-1) * q / 100)
	return l[i].Round(10 * time.Microsecond)
}

func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func rssKB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func report(c *config, rs []*result) string {
	var b strings.Builder
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "# Leases: etcd vs Mosaic\n\n%s, %d CPUs (runtime.NumCPU), load average at the end %s\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(&b, "`go run ./tests/leasebench %s`\n\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(&b, "Grants: %d with generated ids, TTL 600, %d clients on %d connections. Keep-alives: %d, each client renewing its own lease on its own stream, one in flight (as `benchmark lease-keepalive`). Hold: %d leases, TTL %ds, each renewed every %s on %d streams for %s.\n\n",
		c.grants, c.clients, c.conns, c.keepalives, c.holdLeases, c.holdTTL, time.Duration(c.holdTTL)*time.Second/3, c.holdStreams, c.hold)
	b.WriteString("| metric |")
	for _, r := range rs {
		fmt.Fprintf(&b, " %s |", r.target)
	}
	if len(rs) == 2 {
		fmt.Fprintf(&b, " %s ÷ %s |", rs[1].target, rs[0].target)
	}
	b.WriteString("\n|---|")
	for range rs {
		b.WriteString("---:|")
	}
	if len(rs) == 2 {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	row := func(name string, f func(r *result) float64, format string) {
		fmt.Fprintf(&b, "| %s |", name)
		for _, r := range rs {
			if r.err != nil {
				b.WriteString(" failed |")
				continue
			}
			fmt.Fprintf(&b, " "+format+" |", f(r))
		}
		if len(rs) == 2 && rs[0].err == nil && rs[1].err == nil && f(rs[0]) != 0 {
			fmt.Fprintf(&b, " %.2f× |", f(rs[1])/f(rs[0]))
		} else if len(rs) == 2 {
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
	msf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	row("grants/s", func(r *result) float64 { return r.grantRPS }, "%.0f")
	row("grant p50 (ms)", func(r *result) float64 { return msf(r.grantLat.p(50)) }, "%.2f")
	row("grant p99 (ms)", func(r *result) float64 { return msf(r.grantLat.p(99)) }, "%.2f")
	row("keep-alives/s", func(r *result) float64 { return r.kaRPS }, "%.0f")
	row("keep-alive p50 (ms)", func(r *result) float64 { return msf(r.kaLat.p(50)) }, "%.2f")
	row("keep-alive p99 (ms)", func(r *result) float64 { return msf(r.kaLat.p(99)) }, "%.2f")
	row("hold: time to grant all (s)", func(r *result) float64 { return r.holdSetup.Seconds() }, "%.1f")
	row("hold: keep-alives/s", func(r *result) float64 { return float64(len(r.holdLat)) / c.hold.Seconds() }, "%.0f")
	row("hold: keep-alive p50 (ms)", func(r *result) float64 { return msf(r.holdLat.p(50)) }, "%.2f")
	row("hold: keep-alive p99 (ms)", func(r *result) float64 { return msf(r.holdLat.p(99)) }, "%.2f")
	row("hold: keep-alive max (ms)", func(r *result) float64 { return msf(r.holdLat.p(100)) }, "%.2f")
	row("hold: server CPU (cores)", func(r *result) float64 { return r.holdCPU }, "%.2f")
	row("RSS before the hold (MiB)", func(r *result) float64 { return float64(r.rssIdle) / 1024 }, "%.0f")
	row("RSS holding the leases (MiB)", func(r *result) float64 { return float64(r.rssHold) / 1024 }, "%.0f")
	row("leases left after the hold", func(r *result) float64 { return float64(r.leftAfter) }, "%.0f")
	row("hold: failed keep-alives", func(r *result) float64 { return float64(r.holdErrs) }, "%.0f")
	for _, r := range rs {
		if r.err != nil {
			fmt.Fprintf(&b, "\n%s failed: %v\n", r.target, r.err)
		}
	}
	b.WriteString("\nThe benchmark client runs on the same machine as the server; numbers compare only within one run.\n")
	return b.String()
}
