package harness

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Server is a store a test can talk to: the embedded reference etcd, a Mosaic process or an
// etcd process.
type Server interface {
	// Name says what the server is, for messages: "etcd", "mosaic" or "etcd-process".
	Name() string
	// Endpoint is the client URL, e.g. http://127.0.0.1:23456.
	Endpoint() string
	// Client is a client connected to Endpoint, closed when the test ends.
	Client() *clientv3.Client
}

// DefaultMemberName is the --name of every server the harness starts, so that outputs which
// print member names (etcdctl member list) are the same for the reference and the subject.
const DefaultMemberName = "node1"

// NewClient connects a quiet client to endpoint; the caller closes it. clientv3.New does not
// wait for the connection, so it only fails on a bad configuration. Server.Client is the
// shared client; tests with concurrent clients make their own.
func NewClient(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("clientv3.New(%s): %v", endpoint, err)
	}
	return c
}
