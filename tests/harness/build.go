package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// binaries are built once per test binary run into one temporary directory that Main
// removes when the tests are done.
var (
	binDirOnce sync.Once
	binDir     string
	binDirErr  error

	mosaicOnce  sync.Once
	mosaicBins  MosaicBinaries
	mosaicErr   error
	etcdctlOnce sync.Once
	etcdctlBin  string
	etcdctlErr  error
)

// MosaicBinaries are the paths of the binaries built from the repository.
type MosaicBinaries struct {
	Mosaic    string // cmd/mosaic, the server
	Mosaicctl string // cmd/mosaicctl, the admin CLI
}

// RepoRoot is the root of the Mosaic repository, found from this file's location
// (tests/harness/build.go).
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("harness: runtime.Caller failed")
	}
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

// TestsModuleDir is the directory of the tests module (which requires etcdctl).
func TestsModuleDir() string { return filepath.Join(RepoRoot(), "tests") }

func buildDir() (string, error) {
	binDirOnce.Do(func() {
		binDir, binDirErr = os.MkdirTemp("", "mosaic-e2e-bin-")
	})
	return binDir, binDirErr
}

// goBuild runs `go build -o out pkg` in dir.
func goBuild(dir, out, pkg string) error {
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s (in %s): %w\n%s", pkg, dir, err, output)
	}
	logf("built %s in %s", pkg, time.Since(start).Round(time.Millisecond))
	return nil
}

// logf prints build progress to stderr, where `go test -v` shows it; builds happen once per
// run, outside any single test.
func logf(format string, args ...any) {
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "harness: "+format+"\n", args...)
	}
}

// BuildMosaic builds ./cmd/mosaic and ./cmd/mosaicctl from the repository root, once per
// test binary run, and returns their paths. It fails the test if the build fails.
func BuildMosaic(t testing.TB) MosaicBinaries {
	t.Helper()
	mosaicOnce.Do(func() {
		dir, err := buildDir()
		if err != nil {
			mosaicErr = err
			return
		}
		bins := MosaicBinaries{
			Mosaic:    filepath.Join(dir, "mosaic"),
			Mosaicctl: filepath.Join(dir, "mosaicctl"),
		}
		if err := goBuild(RepoRoot(), bins.Mosaic, "./cmd/mosaic"); err != nil {
			mosaicErr = err
			return
		}
		if err := goBuild(RepoRoot(), bins.Mosaicctl, "./cmd/mosaicctl"); err != nil {
			mosaicErr = err
			return
		}
		mosaicBins = bins
	})
	if mosaicErr != nil {
		t.Fatalf("building Mosaic: %v", mosaicErr)
	}
	return mosaicBins
}

// BuildEtcdctl builds etcdctl from the go.etcd.io/etcd/etcdctl/v3 module required by the
// tests module, once per test binary run, and returns its path.
func BuildEtcdctl(t testing.TB) string {
	t.Helper()
	etcdctlOnce.Do(func() {
		dir, err := buildDir()
		if err != nil {
			etcdctlErr = err
			return
		}
		out := filepath.Join(dir, "etcdctl")
		if err := goBuild(TestsModuleDir(), out, "go.etcd.io/etcd/etcdctl/v3"); err != nil {
			etcdctlErr = err
			return
		}
		etcdctlBin = out
	})
	if etcdctlErr != nil {
		t.Fatalf("building etcdctl: %v", etcdctlErr)
	}
	return etcdctlBin
}

// Main is the TestMain of a package that uses the harness. When the process was started by
// StartSubject as an etcd server (MOSAIC_TEST_ETCDMAIN=1), it runs etcd and never returns;
// otherwise it runs the tests and removes the binaries built during the run.
func Main(m *testing.M) {
	if os.Getenv(etcdMainEnv) == "1" {
		runEtcdMain()
		os.Exit(0)
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
