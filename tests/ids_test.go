package tests

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.uber.org/zap"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// TestMemberAndClusterIDsAsEtcd: started with etcd's flags, Mosaic reports
// the member and cluster ids etcd computes for those flags (etcd's own
// membership code is the reference).
func TestMemberAndClusterIDsAsEtcd(t *testing.T) {
	peer := fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t))
	const token = "ids-test-token"
	p := harness.StartMosaic(t, harness.Options{Name: "n1", Args: []string{
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "n1=" + peer, "--initial-cluster-token", token,
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := p.Client().MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	urls, err := types.NewURLsMap("n1=" + peer)
	if err != nil {
		t.Fatal(err)
	}
	want, err := membership.NewClusterFromURLsMap(zap.NewNop(), token, urls)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Members) != 1 {
		t.Fatalf("%d members", len(resp.Members))
	}
	if got, w := resp.Members[0].ID, uint64(want.MemberByName("n1").ID); got != w {
		t.Errorf("member id %x, etcd computes %x", got, w)
	}
	if got, w := resp.Header.ClusterId, uint64(want.ID()); got != w {
		t.Errorf("cluster id %x, etcd computes %x", got, w)
	}
}
