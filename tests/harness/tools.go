package harness

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// CommandTimeout bounds every etcdctl and mosaicctl invocation.
const CommandTimeout = 30 * time.Second

// Etcdctl runs etcdctl (built by BuildEtcdctl) against endpoint with args and returns its
// stdout, its stderr and the error of a non-zero exit.
func Etcdctl(t testing.TB, endpoint string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return EtcdctlStdin(t, "", endpoint, args...)
}

// EtcdctlStdin is Etcdctl with stdin, for commands that read it (txn).
func EtcdctlStdin(t testing.TB, stdin, endpoint string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bin := BuildEtcdctl(t)
	return run(t, stdin, bin, append([]string{"--endpoints", endpoint}, args...)...)
}

// Mosaicctl runs mosaicctl (built by BuildMosaic) against endpoint with args.
func Mosaicctl(t testing.TB, endpoint string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bins := BuildMosaic(t)
	return run(t, "", bins.Mosaicctl, append([]string{"--endpoints", endpoint}, args...)...)
}

// SplitRange splits the subject's range containing key at key with `mosaicctl range split`,
// failing the test if it fails. An etcd subject has no ranges: then it only logs.
func SplitRange(t testing.TB, subject Server, key string) {
	t.Helper()
	if SubjectIsEtcd() {
		t.Logf("subject is etcd: no range to split at %q", key)
		return
	}
	stdout, stderr, err := Mosaicctl(t, subject.Endpoint(), "range", "split", "--", key)
	if err != nil {
		t.Fatalf("mosaicctl range split %q: %v\nstdout: %s\nstderr: %s", key, err, stdout, stderr)
	}
}

// RangeList returns the output of `mosaicctl range list` (empty for an etcd subject).
func RangeList(t testing.TB, subject Server) string {
	t.Helper()
	if SubjectIsEtcd() {
		return ""
	}
	stdout, stderr, err := Mosaicctl(t, subject.Endpoint(), "range", "list")
	if err != nil {
		t.Fatalf("mosaicctl range list: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	return stdout
}

func run(t testing.TB, stdin, bin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("%s %s: no exit within %s\nstdout: %s\nstderr: %s", bin, strings.Join(args, " "), CommandTimeout, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String(), err
}
