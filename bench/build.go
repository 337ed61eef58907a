package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Binaries are the programs one run uses, all built into one temp dir.
type Binaries struct {
	Benchmark string // etcd's tools/benchmark
	Seed      string // our tiny clientv3 helper (seedSource)
	Etcd      string
	Mosaic    string
	Mosaicctl string
	MosaicErr error // why Mosaic could not be built, if it could not
}

// builder runs build commands and remembers them for the report.
type builder struct {
	log      func(format string, args ...any)
	commands []string
}

func (b *builder) run(ctx context.Context, dir string, env []string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	line := strings.Join(append([]string{name}, args...), " ")
	if len(env) > 0 {
		line = strings.Join(env, " ") + " " + line
	}
	b.commands = append(b.commands, fmt.Sprintf("(cd %s && %s)", dir, line))
	b.log("build: %s", line)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", line, err, tail(string(out), 40))
	}
	return nil
}

// toolModule creates a throwaway module in dir that requires the given
// module versions, so `go build <pkg>` builds them from the module proxy
// exactly as released (their own replace directives do not apply to a
// dependency, which is why `go install pkg@version` can't be used).
func (b *builder) toolModule(ctx context.Context, dir, name string, gets ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module "+name+"\n\ngo 1.26\n"), 0o644); err != nil {
		return err
	}
	return b.run(ctx, dir, []string{"GOWORK=off"}, "go", append([]string{"get"}, gets...)...)
}

// BuildAll builds what the selected targets need into binDir.
func BuildAll(ctx context.Context, b *builder, cfg *Config, binDir string, needEtcd, needMosaic bool) (*Binaries, error) {
	bins := &Binaries{
		Benchmark: filepath.Join(binDir, "benchmark"),
		Seed:      filepath.Join(binDir, "benchseed"),
		Etcd:      filepath.Join(binDir, "etcd"),
		Mosaic:    filepath.Join(binDir, "mosaic"),
		Mosaicctl: filepath.Join(binDir, "mosaicctl"),
	}
	offEnv := []string{"GOWORK=off"}

	// 1. etcd's benchmark tool (root module go.etcd.io/etcd/v3; the proxy
	// only has it up to v3.6.x) and the seed helper, on the same clientv3.
	tools := filepath.Join(binDir, "src", "tools")
	if err := b.toolModule(ctx, tools, "mosaicbench/tools",
		"go.etcd.io/etcd/v3/tools/benchmark@"+cfg.BenchmarkVersion,
		"go.etcd.io/etcd/client/v3@"+cfg.BenchmarkVersion); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(tools, "seed"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tools, "seed", "main.go"), []byte(seedSource), 0o644); err != nil {
		return nil, err
	}
	if err := b.run(ctx, tools, offEnv, "go", "build", "-mod=mod", "-o", bins.Benchmark, "go.etcd.io/etcd/v3/tools/benchmark"); err != nil {
		return nil, err
	}
	if err := b.run(ctx, tools, offEnv, "go", "build", "-mod=mod", "-o", bins.Seed, "./seed"); err != nil {
		return nil, err
	}

	// 2. etcd itself: the server module's main package.
	if needEtcd {
		srv := filepath.Join(binDir, "src", "etcd")
		if err := b.toolModule(ctx, srv, "mosaicbench/etcd", "go.etcd.io/etcd/server/v3@"+cfg.EtcdVersion); err != nil {
			return nil, err
		}
		if err := b.run(ctx, srv, offEnv, "go", "build", "-mod=mod", "-o", bins.Etcd, "go.etcd.io/etcd/server/v3"); err != nil {
			return nil, err
		}
	}

	// 3. Mosaic from this repository (workspace mode, as CI builds it).
	if needMosaic {
		if err := b.run(ctx, cfg.Repo, nil, "go", "build", "-o", bins.Mosaic, "./cmd/mosaic"); err != nil {
			bins.MosaicErr = err
		} else if err := b.run(ctx, cfg.Repo, nil, "go", "build", "-o", bins.Mosaicctl, "./cmd/mosaicctl"); err != nil {
			bins.MosaicErr = err
		}
	}
	return bins, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
