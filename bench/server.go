package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartServer starts bin (etcd or mosaic: both take etcd's flags) as a
// fresh single-member cluster with its data in a new dir under workDir.
func StartServer(name, bin, workDir string) (*Server, error) {
	cport, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	for err == nil && pport == cport {
		pport, err = freePort()
	}
	if err != nil {
		return nil, err
	}
	dataDir, err := os.MkdirTemp(workDir, name+"-data-")
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", cport)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pport)
	member := "bench"
	args := []string{
		"--name", member,
		"--data-dir", dataDir,
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", member + "=" + peer,
		"--initial-cluster-state", "new",
		"--initial-cluster-token", "bench-" + name,
	}
	s := &Server{
		Name:      name,
		Args:      append([]string{bin}, args...),
		ClientURL: client,
		Endpoint:  fmt.Sprintf("127.0.0.1:%d", cport),
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
