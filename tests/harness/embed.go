package harness

import (
	"errors"
	"net/url"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Embedded is an etcd server running inside the test process: the reference every
// differential test compares the subject with.
type Embedded struct {
	t        testing.TB
	etcd     *embed.Etcd
	endpoint string

	mu     sync.Mutex
	client *clientv3.Client
}

// StartEtcd starts an embedded single-member etcd named DefaultMemberName on free ports in
// a temporary directory, logging only errors, and waits until it serves clients. It is
// stopped when the test ends.
func StartEtcd(t testing.TB) *Embedded {
	t.Helper()
	// A port FreePort found free may be taken by another process (another
	// test binary of the same run) before etcd binds it: then etcd starts
	// again on other ports.
	for attempt := 1; ; attempt++ {
		e, log, clientURL, err := startEtcdOn(t, mustURL(t, localURL(FreePort(t))), mustURL(t, localURL(FreePort(t))))
		if errors.Is(err, syscall.EADDRINUSE) && attempt < 3 {
			t.Logf("starting embedded etcd: %v; trying other ports", err)
			continue
		}
		if err != nil {
			t.Fatalf("starting embedded etcd: %v", err)
		}
		return serveEmbedded(t, e, log, clientURL)
	}
}

func startEtcdOn(t testing.TB, clientURL, peerURL url.URL) (*embed.Etcd, *processLog, url.URL, error) {
	cfg := embed.NewConfig()
	cfg.Name = DefaultMemberName
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Warnings and errors go to a buffer printed only if the test fails: closing etcd logs
	// errors about closed listeners that mean nothing.
	log := &processLog{}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(zapcore.NewCore(
		zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(log), zapcore.WarnLevel)))
	// The reference need not survive a crash; skipping fsync keeps the suite fast.
	cfg.UnsafeNoFsync = true

	e, err := embed.StartEtcd(cfg)
	return e, log, clientURL, err
}

func serveEmbedded(t testing.TB, e *embed.Etcd, log *processLog, clientURL url.URL) *Embedded {
	s := &Embedded{t: t, etcd: e, endpoint: clientURL.String()}
	t.Cleanup(func() {
		// Closing etcd logs errors about closed listeners; only what came before matters.
		before := &processLog{}
		before.note(log.String())
		s.close()
		if t.Failed() {
			t.Logf("embedded etcd warnings and errors:\n%s", before.tail(100))
		}
	})
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("embedded etcd failed: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatalf("embedded etcd not ready after 60s")
	}
	return s
}

func (s *Embedded) close() {
	s.mu.Lock()
	if s.client != nil {
		s.client.Close()
		s.client = nil
	}
	s.mu.Unlock()
	s.etcd.Close()
}

// Name implements Server.
func (s *Embedded) Name() string { return "etcd" }

// Endpoint implements Server.
func (s *Embedded) Endpoint() string { return s.endpoint }

// Client implements Server.
func (s *Embedded) Client() *clientv3.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = NewClient(s.t, s.endpoint)
	}
	return s.client
}

func mustURL(t testing.TB, s string) url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return *u
}
