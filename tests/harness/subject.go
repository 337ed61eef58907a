package harness

import (
	"os"
	"testing"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

const (
	// SubjectEnv selects the server under test: "mosaic" (the default) or "etcd".
	SubjectEnv = "MOSAIC_TEST_SUBJECT"
	// KeepLogsEnv=1 saves a cluster's member logs to files even when its test passes.
	KeepLogsEnv = "MOSAIC_TEST_KEEP_LOGS"
	// etcdMainEnv makes Main run etcd instead of the tests.
	etcdMainEnv = "MOSAIC_TEST_ETCDMAIN"
)

// SubjectIsEtcd reports whether MOSAIC_TEST_SUBJECT=etcd asks to test etcd instead of Mosaic.
func SubjectIsEtcd() bool { return os.Getenv(SubjectEnv) == "etcd" }

// StartSubject starts the server under test: Mosaic (StartMosaic), or with
// MOSAIC_TEST_SUBJECT=etcd a real etcd process (this test binary re-executed as etcd, see
// Main), started with the same flags and handled the same way.
func StartSubject(t testing.TB, opts Options) *Process {
	t.Helper()
	if SubjectIsEtcd() {
		return StartEtcdProcess(t, opts)
	}
	return StartMosaic(t, opts)
}

// StartEtcdProcess starts etcd as a child process (this test binary, re-executed) with the
// flags StartMosaic gives Mosaic, and waits until it is ready.
func StartEtcdProcess(t testing.TB, opts Options) *Process {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("os.Executable: %v", err)
	}
	return startProcess(t, "etcd-process", self, []string{etcdMainEnv + "=1"}, opts)
}

// runEtcdMain runs etcd's main function with this process's arguments.
func runEtcdMain() {
	os.Unsetenv(etcdMainEnv)
	etcdmain.Main(append([]string{"etcd"}, os.Args[1:]...))
}

// SkipForMosaic skips the test when the subject is Mosaic, naming the issue that tracks the
// missing feature. With MOSAIC_TEST_SUBJECT=etcd the test runs.
func SkipForMosaic(t testing.TB, issue string) {
	t.Helper()
	if !SubjectIsEtcd() {
		t.Skip(issue)
	}
}
