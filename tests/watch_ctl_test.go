package tests

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// watchCtl runs `etcdctl watch` (which never exits by itself) with args,
// feeds stdin lines (interactive mode) a little apart, lets it run for
// `run` and returns what it printed.
func watchCtl(t *testing.T, endpoint string, lines []string, run time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), run+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.BuildEtcdctl(t), append([]string{"--endpoints", endpoint, "watch"}, args...)...)
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		time.Sleep(300 * time.Millisecond)
		io.WriteString(stdin, l+"\n")
	}
	time.Sleep(run)
	cmd.Process.Kill()
	cmd.Wait()
	stdin.Close()
	return out.String()
}

// dedupLines drops repeated consecutive lines (periodic progress
// notifications come as often as the timer fires).
func dedupLines(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if len(out) > 0 && out[len(out)-1] == l {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// TestWatchEtcdctl compares `etcdctl watch` on both servers: prefix, a
// range, --rev from history, --prev-kv, interactive `progress`, and
// --progress-notify with a short --watch-progress-notify-interval. Not
// parallel: the embedded etcd's progress interval is a process global.
func TestWatchEtcdctl(t *testing.T) {
	harness.BuildEtcdctl(t)
	ref := harness.StartEtcd(t)
	v3rpc.SetProgressReportInterval(300 * time.Millisecond)
	defer v3rpc.SetProgressReportInterval(10 * time.Minute)
	subj := harness.StartSubject(t, harness.Options{Args: []string{"--watch-progress-notify-interval", "300ms"}})
	d := harness.NewDiff(t, ref, subj)
	for _, s := range []harness.Server{ref, subj} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for i := range 6 {
			if _, err := s.Client().Put(ctx, fmt.Sprintf("k%d", i%3), fmt.Sprintf("v%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Client().Delete(ctx, "k1"); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	cases := []struct {
		lines []string
		args  []string
	}{
		{args: []string{"--prefix", "k", "--rev", "2"}},
		{args: []string{"--prefix", "k", "--rev", "3", "--prev-kv"}},
		{args: []string{"k0", "k2", "--rev", "1"}},
		{args: []string{"k2", "--rev", "1", "-w", "json"}},
		{args: []string{"--prefix", "k", "--rev", "2", "--progress-notify"}},
		{args: []string{"-i"}, lines: []string{"watch --prefix k --rev 6", "progress", "watch k0 --rev 2 --prev-kv", "progress"}},
	}
	refNorm, subjNorm := etcdctlNormalizer(ref.Endpoint()), etcdctlNormalizer(subj.Endpoint())
	for _, c := range cases {
		r := dedupLines(refNorm(watchCtl(t, ref.Endpoint(), c.lines, 1500*time.Millisecond, c.args...)))
		s := dedupLines(subjNorm(watchCtl(t, subj.Endpoint(), c.lines, 1500*time.Millisecond, c.args...)))
		compareText(t, "etcdctl watch "+strings.Join(c.args, " ")+" "+strings.Join(c.lines, "; "), r, s, d)
		if strings.Contains(strings.Join(c.args, " "), "progress") && !strings.Contains(r, "progress notify: 8") {
			t.Errorf("reference printed no progress notification:\n%s", r)
		}
	}
}

// TestWatchProgressNotify: progress_notify watchers hear the current
// revision on the server's interval with their own watch id; a watcher
// without progress_notify, or waiting for a future revision, hears
// nothing. Compared with etcd as sets of distinct responses, not counts
// (each server's timers run on their own).
func TestWatchProgressNotify(t *testing.T) {
	ref := harness.StartEtcd(t)
	v3rpc.SetProgressReportInterval(200 * time.Millisecond)
	defer v3rpc.SetProgressReportInterval(10 * time.Minute)
	subj := harness.StartSubject(t, harness.Options{Args: []string{"--watch-progress-notify-interval", "200ms"}})
	summary := func(s harness.Server) map[string]bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Client().Put(ctx, "pn", "1")
		st := openRaw(t, s.Client())
		st.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("pn"), ProgressNotify: true, WatchId: 4}))
		st.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("pn"), WatchId: 5}))
		st.send(t, createReq(&pb.WatchCreateRequest{Key: []byte("pn"), ProgressNotify: true, StartRevision: 100, WatchId: 6}))
		time.Sleep(700 * time.Millisecond)
		s.Client().Put(ctx, "other", "1")
		time.Sleep(700 * time.Millisecond)
		seen := map[string]bool{}
		for _, r := range st.drain() {
			c := r.Header.Revision
			seen[fmt.Sprintf("id=%d rev=%d created=%v events=%d", r.WatchId, c, r.Created, len(r.Events))] = true
		}
		return seen
	}
	r, s := summary(ref), summary(subj)
	if fmt.Sprint(r) != fmt.Sprint(s) {
		t.Errorf("progress notifications differ:\netcd:    %v\nsubject: %v", r, s)
	}
	if !r["id=4 rev=3 created=false events=0"] {
		t.Errorf("reference sent no progress notification at revision 3: %v", r)
	}
}
