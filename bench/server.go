package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

const readyLine = "ready to serve client requests"

// Server is one server process started by this tool, on loopback ports.
type Server struct {
	Name       string
	Cmd        *exec.Cmd
	Args       []string
	ClientURL  string // http://127.0.0.1:port
	Endpoint   string // 127.0.0.1:port, as the benchmark tool wants it
	DataDir    string
	LogPath    string
	ready      chan struct{}
	exited     chan struct{}
	exitErr    error
	logFile    *os.File
	stopOnce   sync.Once
	readyOnce  sync.Once
	startedAt  time.Time
	ReadyAfter time.Duration
}

// freePorts asks the kernel for n distinct free loopback ports (all
// listeners are held until every port is known, so none repeats).
func freePorts(n int) ([]int, error) {
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Cluster is the server processes of one target: a single member, or the
// members of a cluster started together from etcd's static bootstrap flags.
type Cluster struct {
	Name      string
	Members   []*Server
	Endpoints []string      // 127.0.0.1:port of each member, as the benchmark tool wants them
	exited    chan struct{} // closed as soon as any member exits
}

// StartCluster starts n members of bin (etcd or mosaic: both take etcd's
// flags) as a fresh cluster on loopback: distinct client and peer ports and
// a new data dir under workDir for each, --initial-cluster listing all of
// them, --initial-cluster-state new and a token of the target's own. With
// n == 1 it is the single-member server every single-node target runs.
func StartCluster(name, bin, workDir string, n int) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	names := make([]string, n)
	clients := make([]string, n)
	peers := make([]string, n)
	var initial []string
	for i := range names {
		names[i] = "bench"
		if n > 1 {
			names[i] = fmt.Sprintf("bench-%d", i+1)
		}
		clients[i] = fmt.Sprintf("http://127.0.0.1:%d", ports[2*i])
		peers[i] = fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
		initial = append(initial, names[i]+"="+peers[i])
	}
	c := &Cluster{Name: name, exited: make(chan struct{})}
	var once sync.Once
	for i := range names {
		label := name
		if n > 1 {
			label = name + "-" + names[i]
		}
		dataDir, err := os.MkdirTemp(workDir, label+"-data-")
		if err == nil {
			var s *Server
			s, err = startServer(label, bin, workDir, clients[i], dataDir, []string{
				"--name", names[i],
				"--data-dir", dataDir,
				"--listen-client-urls", clients[i],
				"--advertise-client-urls", clients[i],
				"--listen-peer-urls", peers[i],
				"--initial-advertise-peer-urls", peers[i],
				"--initial-cluster", strings.Join(initial, ","),
				"--initial-cluster-state", "new",
				"--initial-cluster-token", "bench-" + name,
			})
			if err == nil {
				c.Members = append(c.Members, s)
				c.Endpoints = append(c.Endpoints, s.Endpoint)
				go func() {
					<-s.exited
					once.Do(func() { close(c.exited) })
				}()
			}
		}
		if err != nil {
			c.Stop(5 * time.Second)
			return nil, fmt.Errorf("%s: %w", label, err)
		}
	}
	return c, nil
}

// EndpointList is the endpoints, comma-separated (--endpoints).
func (c *Cluster) EndpointList() string { return strings.Join(c.Endpoints, ",") }

// Args is every member's command line, one a line.
func (c *Cluster) Args() string {
	var lines []string
	for _, m := range c.Members {
		lines = append(lines, strings.Join(m.Args, " "))
	}
	return strings.Join(lines, "\n")
}

// WaitReady waits until every member has logged the ready line; ReadyAfter
// is the slowest member's.
func (c *Cluster) WaitReady(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	var after time.Duration
	for _, m := range c.Members {
		if err := m.WaitReady(ctx, timeout); err != nil {
			return 0, err
		}
		after = max(after, m.ReadyAfter)
	}
	return after, nil
}

// Alive reports whether every member is still running.
func (c *Cluster) Alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// Dead returns the members that have exited.
func (c *Cluster) Dead() []*Server {
	var d []*Server
	for _, m := range c.Members {
		if !m.Alive() {
			d = append(d, m)
		}
	}
	return d
}

// Stop stops every member at once (SIGTERM, SIGKILL after grace) and
// returns their stop errors joined.
func (c *Cluster) Stop(grace time.Duration) error {
	errs := make([]error, len(c.Members))
	var wg sync.WaitGroup
	for i, m := range c.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Stop(grace)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// LogTail is the last n lines of every member's log, each under its name
// when there are several members.
func (c *Cluster) LogTail(n int) string {
	if len(c.Members) == 1 {
		return c.Members[0].LogTail(n)
	}
	var sb strings.Builder
	for _, m := range c.Members {
		fmt.Fprintf(&sb, "--- %s (%s) ---\n%s\n", m.Name, m.LogPath, m.LogTail(n))
	}
	return sb.String()
}

// startServer starts one server process with the given flags and copies its
// output to <workDir>/<name>.log, watching for the ready line.
func startServer(name, bin, workDir, client, dataDir string, args []string) (*Server, error) {
	var err error
	s := &Server{
		Name:      name,
		Args:      append([]string{bin}, args...),
		ClientURL: client,
		Endpoint:  strings.TrimPrefix(client, "http://"),
		DataDir:   dataDir,
		LogPath:   filepath.Join(workDir, name+".log"),
		ready:     make(chan struct{}),
		exited:    make(chan struct{}),
	}
	s.logFile, err = os.Create(s.LogPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	// Its own process group, so stopping it also stops anything it forks.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	s.Cmd = cmd
	s.startedAt = time.Now()
	if err := cmd.Start(); err != nil {
		s.logFile.Close()
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(s.logFile, line)
			if strings.Contains(line, readyLine) {
				s.readyOnce.Do(func() {
					s.ReadyAfter = time.Since(s.startedAt)
					close(s.ready)
				})
			}
		}
		io.Copy(s.logFile, pr) // drain after an over-long line
	}()
	go func() {
		s.exitErr = cmd.Wait()
		pw.Close()
		close(s.exited)
	}()
	return s, nil
}

// WaitReady waits for the ready log line.
func (s *Server) WaitReady(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.ready:
		return nil
	case <-s.exited:
		return fmt.Errorf("%s exited before it was ready (%v); log tail:\n%s", s.Name, s.exitErr, s.LogTail(30))
	case <-t.C:
		return fmt.Errorf("%s did not log %q within %v; log tail:\n%s", s.Name, readyLine, timeout, s.LogTail(30))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Alive reports whether the process is still running.
func (s *Server) Alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM to the server's process group, and SIGKILL if it has
// not exited after grace. Safe to call more than once.
func (s *Server) Stop(grace time.Duration) error {
	var err error
	s.stopOnce.Do(func() {
		pid := s.Cmd.Process.Pid
		if s.Alive() {
			_ = syscall.Kill(-pid, syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(grace):
				err = fmt.Errorf("%s did not stop within %v of SIGTERM; killed", s.Name, grace)
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				<-s.exited
			}
		}
		// Anything left in its group (it should be empty) goes too.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		s.logFile.Close()
	})
	return err
}

// Exited returns the process's exit error, once it has exited.
func (s *Server) Exited() (bool, error) {
	select {
	case <-s.exited:
		return true, s.exitErr
	default:
		return false, nil
	}
}

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return err.Error()
	}
	return tail(string(b), n)
}

// runBounded runs a command with a timeout in its own process group and
// returns its stdout and stderr. On timeout the whole group is killed.
func runBounded(ctx context.Context, timeout time.Duration, name string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %v (killed)", timeout)
	}
	return o.String(), e.String(), err
}

// FatalLine returns the last log line that looks like the reason the
// server died (a fatal log entry or a panic), shortened, or "".
func (s *Server) FatalLine() string {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if strings.Contains(l, `"level":"fatal"`) || strings.Contains(l, `"level":"panic"`) || strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") {
			if j := strings.Index(l, `,"stacktrace"`); j > 0 {
				l = l[:j] + "}"
			}
			if len(l) > 400 {
				l = l[:400] + "…"
			}
			return l
		}
	}
	return ""
}

// LogSummary describes, for each member that logged any warning or error
// entries, how many of each level and the most frequent messages: on a
// cluster these show slow applies, elections and failed forwards. Call it
// before Stop, so shutdown chatter is not counted.
func (c *Cluster) LogSummary() []string {
	var out []string
	for _, m := range c.Members {
		b, err := os.ReadFile(m.LogPath)
		if err != nil {
			continue
		}
		if s := summarizeLog(string(b), 3); s != "" {
			out = append(out, m.Name+" logged "+s)
		}
	}
	return out
}

// summarizeLog counts a zap JSON log's warn/error/fatal/panic entries and
// names the top most frequent messages (with their "error" field).
func summarizeLog(log string, top int) string {
	levels := map[string]int{}
	msgs := map[string]int{}
	sample := map[string]string{} // message -> its first "error" field
	for _, l := range strings.Split(log, "\n") {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(l), &e) != nil {
			continue
		}
		switch e.Level {
		case "warn", "error", "dpanic", "panic", "fatal":
		default:
			continue
		}
		levels[e.Level]++
		msg := e.Level + ": " + e.Msg
		msgs[msg]++
		if _, ok := sample[msg]; !ok {
			if len(e.Error) > 120 {
				e.Error = e.Error[:120] + "…"
			}
			sample[msg] = e.Error
		}
	}
	if len(levels) == 0 {
		return ""
	}
	var counts []string
	for _, lvl := range []string{"warn", "error", "dpanic", "panic", "fatal"} {
		if levels[lvl] > 0 {
			counts = append(counts, fmt.Sprintf("%d %s", levels[lvl], lvl))
		}
	}
	keys := make([]string, 0, len(msgs))
	for k := range msgs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if msgs[keys[i]] != msgs[keys[j]] {
			return msgs[keys[i]] > msgs[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var tops []string
	for i, k := range keys {
		if i == top {
			tops = append(tops, "…")
			break
		}
		t := fmt.Sprintf("%d× %s", msgs[k], k)
		if e := sample[k]; e != "" {
			t += " (e.g. " + e + ")"
		}
		tops = append(tops, t)
	}
	return strings.Join(counts, ", ") + " entries: " + strings.Join(tops, "; ")
}

// CPUSeconds is the user+system CPU time the process has used so far, from
// /proc/PID/stat (Linux; USER_HZ is 100 there).
func (s *Server) CPUSeconds() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.Cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses: state is
	// field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b)[i+1:])
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	var ut, st float64
	if _, err := fmt.Sscan(f[11], &ut); err != nil {
		return 0, err
	}
	if _, err := fmt.Sscan(f[12], &st); err != nil {
		return 0, err
	}
	return (ut + st) / 100, nil
}

// RSSKB is the process's resident memory now, in kB, from /proc/PID/status.
func (s *Server) RSSKB() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.Cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			_, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb)
			return kb, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// sampleRSS records the server's highest resident memory until stop is
// closed, sampling every 50ms, and sends it on the returned channel.
func (s *Server) sampleRSS(stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var peak int64
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if kb, err := s.RSSKB(); err == nil {
				peak = max(peak, kb)
			}
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// CPUSeconds is every member's CPU time so far (0 where it can't be read).
func (c *Cluster) CPUSeconds() []float64 {
	out := make([]float64, len(c.Members))
	for i, m := range c.Members {
		out[i], _ = m.CPUSeconds()
	}
	return out
}
