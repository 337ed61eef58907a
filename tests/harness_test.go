package tests

import (
	"context"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// TestHarnessSmoke checks the pieces every other test relies on: both servers start, a put
// and a get compare equal, and the subject process logs its start.
func TestHarnessSmoke(t *testing.T) {
	t.Parallel()
	d, subj := harness.StartPair(t)
	d.Check("put", func(ctx context.Context, c *clientv3.Client) (any, error) {
		return c.Put(ctx, "smoke", "v1")
	}).WantOK(t)
	got := d.Check("get", func(ctx context.Context, c *clientv3.Client) (any, error) {
		return c.Get(ctx, "smoke")
	})
	got.WantOK(t)
	if !strings.Contains(subj.Log(), harness.ReadyLine) {
		t.Errorf("subject log lacks %q", harness.ReadyLine)
	}
}
