package tests

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// mosaicArgs are the flags of a single node on free ports with data in dir.
func mosaicArgs(t *testing.T, dir string) (args []string, endpoint string) {
	client := fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t))
	return []string{"--data-dir", dir, "--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default=" + peer}, client
}

// startFails runs mosaic on dir and returns its output, failing the test
// unless it exits non-zero, without a panic, within 30s.
func startFails(t *testing.T, dir string) string {
	t.Helper()
	bin := harness.BuildMosaic(t).Mosaic
	args, _ := mosaicArgs(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	text := string(out)
	if ctx.Err() != nil {
		t.Fatalf("mosaic on %s did not exit within 30s:\n%s", dir, text)
	}
	if err == nil {
		t.Fatalf("mosaic on %s started; want a refusal:\n%s", dir, text)
	}
	if strings.Contains(text, "panic:") || strings.Contains(text, "goroutine ") {
		t.Fatalf("mosaic on %s panicked instead of reporting an error:\n%s", dir, text)
	}
	if strings.Contains(text, harness.ReadyLine) {
		t.Fatalf("mosaic on %s reported ready:\n%s", dir, text)
	}
	return text
}

// TestForeignDataDirRefused: a data dir that holds something else is
// refused with a clear error, and left untouched.
func TestForeignDataDirRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := startFails(t, dir)
	if !strings.Contains(out, "not a Mosaic data dir") {
		t.Fatalf("unclear error for a foreign dir:\n%s", out)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("mosaic wrote into a foreign dir: %v", ents)
	}
}

// TestEtcdDataDirRefused: pointing Mosaic at an etcd member's data dir gives
// an error that says so.
func TestEtcdDataDirRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	cfg := embed.NewConfig()
	cfg.Dir = dir
	client := fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t))
	cu, _ := url.Parse(client)
	pu, _ := url.Parse(peer)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	<-e.Server.ReadyNotify()
	e.Close()
	out := startFails(t, dir)
	if !strings.Contains(out, "etcd member") {
		t.Fatalf("unclear error for an etcd data dir:\n%s", out)
	}
}

// TestDamagedDataDirRefused: a Mosaic data dir whose files were damaged
// gives an error at start, not a panic.
func TestDamagedDataDirRefused(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"state manifest", func(t *testing.T, dir string) {
			overwrite(t, filepath.Join(dir, "state", "MANIFEST"), 0)
		}},
		{"raft log segment", func(t *testing.T, dir string) {
			segs, _ := filepath.Glob(filepath.Join(dir, "raft", "wal-*.log"))
			if len(segs) == 0 {
				t.Fatal("no raft log segment to damage")
			}
			overwrite(t, segs[0], 8) // inside the segment header
		}},
		{"marker", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "MOSAIC"), []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			writeSomething(t, dir)
			c.damage(t, dir)
			out := startFails(t, dir)
			if !strings.Contains(strings.ToLower(out), "error") {
				t.Fatalf("no error reported:\n%s", out)
			}
		})
	}
}

// writeSomething starts mosaic on dir, writes a key and stops it cleanly.
func writeSomething(t *testing.T, dir string) {
	t.Helper()
	bin := harness.BuildMosaic(t).Mosaic
	args, endpoint := mosaicArgs(t, dir)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		closed := false
		for sc.Scan() {
			if !closed && strings.Contains(sc.Text(), harness.ReadyLine) {
				close(ready)
				closed = true
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("mosaic not ready")
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err = c.Put(ctx, "k", "v")
	cancel()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mosaic did not stop cleanly: %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("mosaic did not stop within 10s of SIGTERM")
	}
}

// overwrite replaces 16 bytes of a file at off with garbage.
func overwrite(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("\xde\xad\xbe\xef garbage!!"), off); err != nil {
		t.Fatal(err)
	}
}
