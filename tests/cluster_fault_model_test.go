package tests

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// The operations of the cluster fault test and the porcupine model they are checked with.
//
// The test's 30 keys form 15 disjoint pairs: pair p is keys p and p+15 (fault/00 with
// fault/15, ..., fault/14 with fault/29). The ranges are split so that the two keys of
// every pair lie in different ranges. Single-key operations (get, put, cas, delete) touch
// one key; the two multi-key operations touch both keys of one pair, in one Txn:
//
//   - getpair reads both keys (a Txn of two Gets): it must see both at one revision;
//   - transfer compares both keys' values and, if both match, puts a new value to each
//     (else it reads both): an atomic write across two ranges.
//
// Why the check is sound: linearizability is local (Herlihy and Wing, 1990): a history of
// operations on several objects is linearizable if and only if, for each object, the
// sub-history of the operations on that object is linearizable. That needs every operation
// to act on a single object. Taking a key as the object would break this for getpair and
// transfer, which act on two keys; so the object here is a pair, a register of two values,
// and pairModel partitions the history by pair. Every operation touches keys of exactly one
// pair (a single-key operation is an operation on its pair's object that reads or writes
// one half of its state), so each operation is in exactly one partition and the locality
// theorem applies: the whole history is linearizable iff each pair's sub-history is. No
// operation spans two pairs, so nothing is lost by checking the pairs independently; and
// the partitions stay small (two keys), so porcupine's search stays cheap.

// faultInput is one operation of the fault test.
type faultInput struct {
	op       string   // "get", "put", "cas", "delete" on keys[0]; "getpair", "transfer" on both keys of a pair
	pair     int      // the pair the keys belong to: the partition the operation is checked in
	keys     []string // the keys, in slot order for pair operations
	slots    []int    // each key's slot in its pair: 0 for keys 00..14, 1 for keys 15..29
	values   []string // put, cas, transfer: the value written to each key
	expected []string // cas, transfer: the value each key is compared with ("" = absent)
}

// faultOutput is what an operation returned. unknown: a write whose outcome the client never
// learnt (error or timeout); it may or may not have taken effect.
type faultOutput struct {
	// values read, one per key ("" = absent): by get and getpair, and by a cas or transfer
	// whose compare failed (its Else branch reads the keys it compared).
	values  []string
	ok      bool // cas, transfer: whether the compare succeeded; delete: whether a key was deleted
	unknown bool
}

// pairState is the state of one pair: the value of each of its keys ("" = absent).
type pairState [2]string

// faultKey is the i-th key of the test.
func faultKey(i int) string { return fmt.Sprintf("%s%02d", faultKeyPrefix, i) }

// keySlot returns the pair of test key k and its slot in the pair.
func keySlot(k string) (pair, slot int) {
	i, err := strconv.Atoi(strings.TrimPrefix(k, faultKeyPrefix))
	if err != nil || !strings.HasPrefix(k, faultKeyPrefix) || i < 0 || i >= faultKeys {
		panic(fmt.Sprintf("not a fault test key: %q", k))
	}
	return i % faultPairs, i / faultPairs
}

// pairKeys are the keys of pair p, slot 0 first.
func pairKeys(p int) []string { return []string{faultKey(p), faultKey(p + faultPairs)} }

// newFaultInput builds an operation on keys, which must all belong to one pair.
func newFaultInput(op string, keys, values, expected []string) faultInput {
	in := faultInput{op: op, keys: keys, values: values, expected: expected}
	for i, k := range keys {
		p, s := keySlot(k)
		if i > 0 && p != in.pair {
			panic(fmt.Sprintf("keys %q span several pairs", keys))
		}
		in.pair, in.slots = p, append(in.slots, s)
	}
	return in
}

// pairModel is a two-value register per pair of keys; see the comment at the top of the
// file for why partitioning the history by pair is sound.
var pairModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byPair := map[int][]porcupine.Operation{}
		var pairs []int
		for _, op := range history {
			p := op.Input.(faultInput).pair
			if byPair[p] == nil {
				pairs = append(pairs, p)
			}
			byPair[p] = append(byPair[p], op)
		}
		parts := make([][]porcupine.Operation, 0, len(pairs))
		for _, p := range pairs {
			parts = append(parts, byPair[p])
		}
		return parts
	},
	Init: func() interface{} { return pairState{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s, in, out := state.(pairState), input.(faultInput), output.(faultOutput)
		// reads reports whether the values read are the state's.
		reads := func() bool {
			if len(out.values) != len(in.slots) {
				return false
			}
			for i, slot := range in.slots {
				if out.values[i] != s[slot] {
					return false
				}
			}
			return true
		}
		switch in.op {
		case "get", "getpair":
			return reads(), s
		case "put":
			s[in.slots[0]] = in.values[0]
			return true, s
		case "cas", "transfer":
			match := true
			for i, slot := range in.slots {
				match = match && s[slot] == in.expected[i]
			}
			if match {
				if !out.unknown && !out.ok {
					return false, s
				}
				for i, slot := range in.slots {
					s[slot] = in.values[i]
				}
				return true, s
			}
			if out.unknown {
				return true, s // it did not happen
			}
			return !out.ok && reads(), s
		case "delete":
			slot := in.slots[0]
			ok := out.unknown || out.ok == (s[slot] != "")
			s[slot] = ""
			return ok, s
		}
		return false, s
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(faultInput), output.(faultOutput)
		var args []string
		for i, k := range in.keys {
			a := k
			if in.expected != nil {
				a += fmt.Sprintf(" %q", in.expected[i])
			}
			if in.values != nil {
				a += fmt.Sprintf(" -> %q", in.values[i])
			}
			args = append(args, a)
		}
		var res string
		switch {
		case out.unknown:
			res = "unknown"
		case in.op == "put":
			res = "ok"
		case in.op == "delete" || ((in.op == "cas" || in.op == "transfer") && out.ok):
			res = fmt.Sprint(out.ok)
		case in.op == "cas" || in.op == "transfer":
			res = fmt.Sprintf("false, read %q", out.values)
		default:
			res = fmt.Sprintf("%q", out.values)
		}
		return fmt.Sprintf("%s(%s) -> %s", in.op, strings.Join(args, ", "), res)
	},
	DescribeState: func(state interface{}) string {
		s := state.(pairState)
		return fmt.Sprintf("[%q %q]", s[0], s[1])
	},
}

// TestFaultPairModel checks that pairModel accepts what a linearizable store may answer and
// rejects what it may not: reads of deleted values, torn reads of a transfer, a failed
// compare that read other values than the state's, and a failed compare that should have
// succeeded.
func TestFaultPairModel(t *testing.T) {
	a, b := faultKey(0), faultKey(faultPairs) // the two keys of pair 0
	op := func(cl int, in faultInput, out faultOutput, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: cl, Input: in, Output: out, Call: call, Return: ret}
	}
	put := func(key, v string, call int64) porcupine.Operation {
		return op(0, newFaultInput("put", []string{key}, []string{v}, nil), faultOutput{}, call, call+10)
	}
	get := func(key, v string, call int64) porcupine.Operation {
		return op(2, newFaultInput("get", []string{key}, nil, nil), faultOutput{values: []string{v}}, call, call+10)
	}
	getpair := func(va, vb string, call, ret int64) porcupine.Operation {
		return op(3, newFaultInput("getpair", []string{a, b}, nil, nil), faultOutput{values: []string{va, vb}}, call, ret)
	}
	transfer := func(ea, eb string, out faultOutput, call, ret int64) porcupine.Operation {
		return op(1, newFaultInput("transfer", []string{a, b}, []string{"ta", "tb"}, []string{ea, eb}), out, call, ret)
	}
	del := op(1, newFaultInput("delete", []string{a}, nil, nil), faultOutput{ok: true}, 20, 30)
	for _, tc := range []struct {
		name  string
		ops   []porcupine.Operation
		legal bool
	}{
		{"read of a deleted value", []porcupine.Operation{put(a, "x", 0), del, get(a, "x", 40)}, false},
		{"read of absence after a delete", []porcupine.Operation{put(a, "x", 0), del, get(a, "", 40)}, true},
		{"delete that deleted nothing after a put", []porcupine.Operation{put(a, "x", 0),
			op(1, del.Input.(faultInput), faultOutput{ok: false}, 20, 30)}, false},
		{"delete of unknown outcome that happened", []porcupine.Operation{put(a, "x", 0),
			op(1, del.Input.(faultInput), faultOutput{unknown: true}, 20, math.MaxInt64), get(a, "", 40)}, true},
		{"delete of unknown outcome that did not happen", []porcupine.Operation{put(a, "x", 0),
			op(1, del.Input.(faultInput), faultOutput{unknown: true}, 20, math.MaxInt64), get(a, "x", 40)}, true},
		{"the other key of the pair is another value", []porcupine.Operation{put(b, "y", 0), get(a, "", 20), getpair("", "y", 40, 50)}, true},
		{"keys of other pairs are independent", []porcupine.Operation{put(faultKey(1), "z", 0), getpair("", "", 20, 30), get(faultKey(1), "z", 40)}, true},
		{"transfer then a read of both", []porcupine.Operation{transfer("", "", faultOutput{ok: true}, 0, 10), getpair("ta", "tb", 20, 30)}, true},
		{"transfer then a torn read", []porcupine.Operation{transfer("", "", faultOutput{ok: true}, 0, 10), getpair("ta", "", 20, 30)}, false},
		{"transfer then a stale single read", []porcupine.Operation{transfer("", "", faultOutput{ok: true}, 0, 10), get(b, "", 20)}, false},
		{"read of both before a concurrent transfer", []porcupine.Operation{transfer("", "", faultOutput{ok: true}, 0, 30), getpair("", "", 10, 20)}, true},
		{"read of both after a concurrent transfer", []porcupine.Operation{transfer("", "", faultOutput{ok: true}, 0, 30), getpair("ta", "tb", 10, 20)}, true},
		{"torn read during a concurrent transfer", []porcupine.Operation{transfer("", "", faultOutput{ok: true}, 0, 30), getpair("", "tb", 10, 20)}, false},
		{"torn read during a transfer of unknown outcome", []porcupine.Operation{transfer("", "", faultOutput{unknown: true}, 0, math.MaxInt64), getpair("ta", "", 10, 20)}, false},
		{"transfer of unknown outcome that happened", []porcupine.Operation{transfer("", "", faultOutput{unknown: true}, 0, math.MaxInt64), getpair("ta", "tb", 10, 20)}, true},
		{"failed transfer reading the state", []porcupine.Operation{put(a, "x", 0), transfer("x", "y", faultOutput{values: []string{"x", ""}}, 20, 30)}, true},
		{"failed transfer reading other values", []porcupine.Operation{put(a, "x", 0), transfer("x", "y", faultOutput{values: []string{"", ""}}, 20, 30)}, false},
		{"transfer failing though both values match", []porcupine.Operation{put(a, "x", 0), transfer("x", "", faultOutput{values: []string{"x", ""}}, 20, 30)}, false},
		{"transfer succeeding though a value differs", []porcupine.Operation{put(a, "x", 0), transfer("", "", faultOutput{ok: true}, 20, 30)}, false},
	} {
		if got := porcupine.CheckOperations(pairModel, tc.ops); got != tc.legal {
			t.Errorf("%s: linearizable = %v, want %v", tc.name, got, tc.legal)
		}
	}
}
