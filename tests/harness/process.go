package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ReadyLine is what a server logs once it serves clients (etcd's wording, which Mosaic
// keeps so that scripts written for etcd work unchanged).
const ReadyLine = "ready to serve client requests"

// Options configure a server process.
type Options struct {
	// Name is the member name (--name); DefaultMemberName if empty.
	Name string
	// Args are extra command-line flags.
	Args []string
	// ReadyTimeout bounds the wait for ReadyLine; 60s if zero.
	ReadyTimeout time.Duration
}

// StopTimeout is how long Stop waits for a process to exit after SIGTERM.
const StopTimeout = 10 * time.Second

// Process is a server running as a child process, started with etcd's flags: the Mosaic
// binary or, as a check of the tests themselves, etcd. Its combined stdout and stderr, over
// all its restarts, is printed when the test fails.
type Process struct {
	t       testing.TB
	name    string
	bin     string
	args    []string
	env     []string
	timeout time.Duration

	endpoint string
	log      *processLog

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
	waitErr  error         // cmd.Wait's result, set before exited is closed
	starts   int
	launched time.Time // when the current command was started
	client   *clientv3.Client
}

// StartMosaic starts the Mosaic server built by BuildMosaic on free 127.0.0.1 ports with a
// temporary data directory, and waits for it to log ReadyLine. It is killed when the test
// ends.
func StartMosaic(t testing.TB, opts Options) *Process {
	t.Helper()
	bins := BuildMosaic(t)
	return startProcess(t, "mosaic", bins.Mosaic, nil, opts)
}

// startProcess starts bin with etcd's flags for a single-member cluster.
func startProcess(t testing.TB, name, bin string, env []string, opts Options) *Process {
	t.Helper()
	if opts.Name == "" {
		opts.Name = DefaultMemberName
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	clientURL := localURL(FreePort(t))
	peerURL := localURL(FreePort(t))
	dataDir := filepath.Join(t.TempDir(), "data")
	args := []string{
		"--name", opts.Name,
		"--data-dir", dataDir,
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", opts.Name + "=" + peerURL,
		"--initial-cluster-state", "new",
	}
	args = append(args, opts.Args...)
	p := newProcess(t, name, bin, env, args, clientURL, opts.ReadyTimeout)
	p.start()
	return p
}

// newProcess returns a Process that runs bin with exactly args (which must make it serve
// clients at endpoint) and is killed when the test ends; it does not start it.
func newProcess(t testing.TB, name, bin string, env, args []string, endpoint string, timeout time.Duration) *Process {
	p := &Process{
		t:        t,
		name:     name,
		bin:      bin,
		args:     args,
		env:      env,
		timeout:  timeout,
		endpoint: endpoint,
		log:      &processLog{},
	}
	t.Cleanup(p.cleanup)
	return p
}

// Name implements Server.
func (p *Process) Name() string { return p.name }

// Endpoint implements Server. It stays the same across restarts.
func (p *Process) Endpoint() string { return p.endpoint }

// Client implements Server. Stop, Kill and Restart close it: call Client again afterwards.
func (p *Process) Client() *clientv3.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		p.client = NewClient(p.t, p.endpoint)
	}
	return p.client
}

// Log returns everything the process has written so far, over all its restarts.
func (p *Process) Log() string { return p.log.String() }

// start starts the process and waits until it is ready, failing the test otherwise.
func (p *Process) start() {
	p.t.Helper()
	p.awaitReady(p.launch())
}

// launch starts the process and returns a channel closed when it logs ReadyLine. Members of
// a cluster are launched together and then awaited: none is ready before a quorum runs.
func (p *Process) launch() <-chan struct{} {
	p.t.Helper()
	p.mu.Lock()
	p.starts++
	ready := p.log.expect(fmt.Sprintf("----- %s start #%d: %s %s\n", p.name, p.starts, p.bin, strings.Join(p.args, " ")))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		p.t.Fatalf("starting %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.waitErr, p.launched = cmd, exited, nil, time.Now()
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	return ready
}

// awaitReady waits for ready (from launch), failing the test if the process exits first or
// is not ready within its ReadyTimeout of being launched.
func (p *Process) awaitReady(ready <-chan struct{}) {
	p.t.Helper()
	p.mu.Lock()
	cmd, exited, start := p.cmd, p.exited, p.launched
	p.mu.Unlock()
	select {
	case <-ready:
	case <-exited:
	case <-time.After(time.Until(start.Add(p.timeout))):
	}
	// Readiness wins over a deadline that passed while other members were awaited.
	select {
	case <-ready:
		p.t.Logf("%s (pid %d) ready at %s after %s", p.name, cmd.Process.Pid, p.endpoint, time.Since(start).Round(time.Millisecond))
		return
	default:
	}
	select {
	case <-exited:
		p.t.Fatalf("%s exited before logging %q: %v\n%s", p.name, ReadyLine, p.exitErr(), p.log.tail(100))
	default:
		p.t.Fatalf("%s did not log %q within %s\n%s", p.name, ReadyLine, p.timeout, p.log.tail(100))
	}
}

func (p *Process) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// running returns the current command and its exit channel, or nil if it has exited.
func (p *Process) running() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil, nil
	}
	select {
	case <-p.exited:
		return nil, nil
	default:
		return p.cmd, p.exited
	}
}

// Pid is the running process's id, 0 if it is not running.
func (p *Process) Pid() int {
	if cmd, _ := p.running(); cmd != nil {
		return cmd.Process.Pid
	}
	return 0
}

func (p *Process) closeClient() {
	p.mu.Lock()
	c := p.client
	p.client = nil
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// quit makes a running process dump its goroutines and exit (Go's SIGQUIT), and waits up to
// 5s for it.
func (p *Process) quit() {
	cmd, exited := p.running()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() {
	p.t.Helper()
	p.closeClient()
	cmd, exited := p.running()
	if cmd == nil {
		p.t.Fatalf("Kill: %s is not running", p.name)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("Kill %s: %v", p.name, err)
	}
	<-exited
	p.log.note(fmt.Sprintf("----- %s killed (SIGKILL)\n", p.name))
}

// Pause stops the running process where it is (SIGSTOP): it holds its connections and
// its data but answers nothing, as a member cut off from every other would, until Resume.
func (p *Process) Pause() {
	p.t.Helper()
	p.signal("Pause", syscall.SIGSTOP)
	p.log.note(fmt.Sprintf("----- %s paused (SIGSTOP)\n", p.name))
}

// Resume lets a paused process run again (SIGCONT).
func (p *Process) Resume() {
	p.t.Helper()
	p.signal("Resume", syscall.SIGCONT)
	p.log.note(fmt.Sprintf("----- %s resumed (SIGCONT)\n", p.name))
}

func (p *Process) signal(what string, sig syscall.Signal) {
	p.t.Helper()
	cmd, _ := p.running()
	if cmd == nil {
		p.t.Fatalf("%s: %s is not running", what, p.name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s %s: %v", what, p.name, err)
	}
}

// Stop sends SIGTERM and waits for the process to exit. It fails the test if the process
// has not exited within StopTimeout (and then kills it), or if it exits with a status other
// than 0 or death by SIGTERM.
func (p *Process) Stop() {
	p.t.Helper()
	p.closeClient()
	cmd, exited := p.running()
	if cmd == nil {
		p.t.Fatalf("Stop: %s is not running", p.name)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("Stop %s: %v", p.name, err)
	}
	select {
	case <-exited:
	case <-time.After(StopTimeout):
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		p.t.Fatalf("%s did not exit within %s of SIGTERM; killed it", p.name, StopTimeout)
	}
	p.log.note(fmt.Sprintf("----- %s stopped (SIGTERM): %v\n", p.name, p.exitErr()))
	if err := p.exitErr(); err != nil && !killedBy(err, syscall.SIGTERM) {
		p.t.Errorf("%s exited badly after SIGTERM: %v", p.name, err)
	}
}

func killedBy(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// Restart starts the stopped or killed process again with the same flags, data directory
// and ports, and waits for it to be ready.
func (p *Process) Restart() {
	p.t.Helper()
	if cmd, _ := p.running(); cmd != nil {
		p.t.Fatalf("Restart: %s is still running; Stop or Kill it first", p.name)
	}
	p.start()
}

func (p *Process) cleanup() {
	p.closeClient()
	if cmd, exited := p.running(); cmd != nil {
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
	if p.t.Failed() {
		p.t.Logf("%s log (last 200 lines):\n%s", p.name, p.log.tail(200))
	}
}

// processLog collects a process's output and signals when ReadyLine appears.
type processLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	scanned int           // bytes of buf already searched for ReadyLine
	ready   chan struct{} // closed at the next ReadyLine; nil when nobody waits
}

// expect writes a marker and returns a channel closed when ReadyLine is next written.
func (l *processLog) expect(marker string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(marker)
	l.scanned = l.buf.Len()
	l.ready = make(chan struct{})
	return l.ready
}

func (l *processLog) note(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(s)
}

func (l *processLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(b)
	if l.ready == nil {
		return len(b), nil
	}
	// Search complete lines only, from the start of the first unsearched line.
	data := l.buf.Bytes()
	end := bytes.LastIndexByte(data, '\n')
	if end < l.scanned {
		return len(b), nil
	}
	if bytes.Contains(data[l.scanned:end], []byte(ReadyLine)) {
		close(l.ready)
		l.ready = nil
	}
	l.scanned = end + 1
	return len(b), nil
}

func (l *processLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *processLog) tail(n int) string {
	lines := strings.Split(strings.TrimRight(l.String(), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
