package tests

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// linInput is an operation on one key: get, put, compare-and-set (a Txn comparing the
// value, putting on success) or delete.
type linInput struct {
	op       string // "get", "put", "cas", "delete"
	key      string
	value    string // put, cas: the new value
	expected string // cas: the value compared with ("" = absent)
}

// linOutput is what the operation returned. unknown: a write whose outcome the client
// never learnt (error or timeout); it may or may not have taken effect.
type linOutput struct {
	value   string // get: the value read ("" = absent)
	ok      bool   // cas: whether the compare succeeded; delete: whether a key was deleted
	unknown bool
}

// kvModel is a register per key; the history is partitioned by key, which is sound because
// linearizability is compositional and every operation touches one key.
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(linInput).key
			if byKey[k] == nil {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		parts := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, byKey[k])
		}
		return parts
	},
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s, in, out := state.(string), input.(linInput), output.(linOutput)
		switch in.op {
		case "get":
			return out.value == s, s
		case "put":
			return true, in.value
		case "cas":
			if s == in.expected {
				return out.unknown || out.ok, in.value
			}
			return out.unknown || !out.ok, s
		case "delete":
			return out.unknown || out.ok == (s != ""), ""
		}
		return false, s
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(linInput), output.(linOutput)
		res := fmt.Sprintf("%q", out.value)
		switch {
		case out.unknown:
			res = "unknown"
		case in.op == "put":
			res = "ok"
		case in.op == "cas" || in.op == "delete":
			res = fmt.Sprint(out.ok)
		}
		return fmt.Sprintf("%s(%s %q %q) -> %s", in.op, in.key, in.expected, in.value, res)
	},
	DescribeState: func(state interface{}) string { return fmt.Sprintf("%q", state) },
}

// TestLinearizability runs concurrent clients doing gets, puts and compare-and-sets over
// keys spread across several ranges, splits ranges while they run, and checks the history
// with porcupine.
func TestLinearizability(t *testing.T) {
	t.Parallel()
	subj := harness.StartSubject(t, harness.Options{})
	const (
		clients      = 6
		opsPerClient = 400
		keys         = 12
		runFor       = 4 * time.Second
		opTimeout    = 2 * time.Second
	)
	key := func(i int) string { return fmt.Sprintf("lin/%02d", i) }
	for _, i := range []int{3, 6, 9} {
		harness.SplitRange(t, subj, key(i))
	}

	var (
		mu      sync.Mutex
		history []porcupine.Operation
		wg      sync.WaitGroup
		errs    int
	)
	base := time.Now()
	now := func() int64 { return int64(time.Since(base)) }
	deadline := base.Add(runFor)
	for cl := range clients {
		c := harness.NewClient(t, subj.Endpoint())
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cl), 42))
			seen := map[string]string{} // last value this client saw per key
			for n := 0; n < opsPerClient && time.Now().Before(deadline); n++ {
				in := linInput{key: key(rng.IntN(keys)), value: fmt.Sprintf("c%d-%d", cl, n)}
				switch r := rng.IntN(10); {
				case r < 4:
					in.op, in.value = "get", ""
				case r < 7:
					in.op = "put"
				default:
					in.op, in.expected = "cas", seen[in.key]
				}
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				call := now()
				var out linOutput
				var err error
				switch in.op {
				case "get":
					var resp *clientv3.GetResponse
					if resp, err = c.Get(ctx, in.key); err == nil && len(resp.Kvs) > 0 {
						out.value = string(resp.Kvs[0].Value)
					}
				case "put":
					_, err = c.Put(ctx, in.key, in.value)
				case "cas":
					cmp := clientv3.Compare(clientv3.Value(in.key), "=", in.expected)
					if in.expected == "" {
						cmp = clientv3.Compare(clientv3.CreateRevision(in.key), "=", 0)
					}
					var resp *clientv3.TxnResponse
					if resp, err = c.Txn(ctx).If(cmp).Then(clientv3.OpPut(in.key, in.value)).Else(clientv3.OpGet(in.key)).Commit(); err == nil {
						out.ok = resp.Succeeded
						if !resp.Succeeded {
							if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
								seen[in.key] = string(kvs[0].Value)
							} else {
								seen[in.key] = ""
							}
						}
					}
				}
				ret := now()
				cancel()
				if err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
					if in.op == "get" {
						continue // a failed read has no effect
					}
					out, ret = linOutput{unknown: true}, math.MaxInt64
				}
				switch {
				case in.op == "get" && err == nil:
					seen[in.key] = out.value
				case in.op != "get" && err == nil && (in.op == "put" || out.ok):
					seen[in.key] = in.value
				}
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: cl, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}()
	}
	// Split more ranges while the clients run: once a quarter of the operations are done.
	for {
		mu.Lock()
		n := len(history)
		mu.Unlock()
		if n >= clients*opsPerClient/4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling the history's length
	}
	for _, i := range []int{1, 5, 10} {
		harness.SplitRange(t, subj, key(i))
	}
	wg.Wait()

	t.Logf("checking %d operations (%d failed or timed out) by %d clients on %d keys", len(history), errs, clients, keys)
	if len(history) < clients*50 {
		t.Errorf("only %d operations completed", len(history))
	}
	res, info := porcupine.CheckOperationsVerbose(kvModel, history, time.Minute)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("mosaic-linearizability-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(kvModel, info, path); err != nil {
			t.Logf("visualisation failed: %v", err)
		}
		t.Errorf("history is not linearizable; visualisation in %s", path)
	default:
		t.Errorf("linearizability check inconclusive (%s) within a minute", res)
	}
}

// TestKVModelRejectsStaleRead checks that the model used above does catch a violation: a
// read that misses a put which completed before it started.
func TestKVModelRejectsStaleRead(t *testing.T) {
	ops := []porcupine.Operation{
		{ClientId: 0, Input: linInput{op: "put", key: "k", value: "a"}, Call: 0, Output: linOutput{}, Return: 10},
		{ClientId: 1, Input: linInput{op: "get", key: "k"}, Call: 20, Output: linOutput{value: ""}, Return: 30},
	}
	if res := porcupine.CheckOperations(kvModel, ops); res {
		t.Errorf("stale read accepted")
	}
	ops[1].Output = linOutput{value: "a"}
	ops = append(ops,
		porcupine.Operation{ClientId: 2, Input: linInput{op: "cas", key: "k", expected: "a", value: "b"}, Call: 40, Output: linOutput{unknown: true}, Return: math.MaxInt64},
		porcupine.Operation{ClientId: 1, Input: linInput{op: "cas", key: "k", expected: "a", value: "c"}, Call: 50, Output: linOutput{ok: true}, Return: 60},
	)
	if res := porcupine.CheckOperations(kvModel, ops); !res {
		t.Errorf("linearizable history rejected")
	}
}
