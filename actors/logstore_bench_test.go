package actors

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// BenchmarkSubmit measures the latency of one durable Submit (a Ready with a
// HardState and one 128-byte entry) with 1 and with 100 concurrent writers,
// each writer driving its own group. us/write is the mean Submit→Done time.
func BenchmarkSubmit(b *testing.B) {
	for _, writers := range []int{1, 100} {
		b.Run(map[int]string{1: "writers=1", 100: "writers=100"}[writers], func(b *testing.B) {
			s, err := OpenLogStore(b.TempDir(), zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := make([]byte, 128)
			var next atomic.Int64
			var totalLat atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func(group uint64) {
					defer wg.Done()
					done := make(chan error, 1)
					for idx := uint64(1); next.Add(1) <= int64(b.N); idx++ {
						lw := &LogWrite{
							Group:   group,
							State:   &raftpb.HardState{Term: proto.Uint64(1), Vote: proto.Uint64(1), Commit: proto.Uint64(idx)},
							Entries: []*raftpb.Entry{{Term: proto.Uint64(1), Index: proto.Uint64(idx), Data: data}},
							Done:    func(err error) { done <- err },
						}
						t0 := time.Now()
						s.Submit(lw)
						if err := <-done; err != nil {
							b.Error(err)
							return
						}
						totalLat.Add(int64(time.Since(t0)))
					}
				}(uint64(w + 1))
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(totalLat.Load())/float64(b.N)/1e3, "us/write")
		})
	}
}
