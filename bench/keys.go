package main

import (
	"bytes"
	"encoding/binary"
	"math"
	"sort"
)

// benchmarkKey is the key etcd's benchmark tool writes for key number n
// (tools/benchmark/cmd/put.go): an 8-byte buffer (--key-size=8) into which
// binary.PutVarint(n) is written. PutVarint zig-zag encodes (n -> 2n) and
// then writes 7 bits per byte, lowest first, with 0x80 as continuation bit.
// So for 64 <= n < 8192 the first byte is 0x80|(2n&0x7f): only even bytes in
// 0x80..0xfe, uniformly. The tool reuses the buffer, so the bytes after the
// varint are left over from earlier keys; they don't matter for which range
// a key falls in, since the varint prefix already orders the keys.
func benchmarkKey(n int, keySize int) []byte {
	k := make([]byte, max(keySize, binary.MaxVarintLen64))
	binary.PutVarint(k, int64(n))
	return k[:keySize]
}

// SplitKeys returns ranges-1 split keys that cut the keys the benchmark tool
// generates for --key-space-size=keySpace (uniformly random n in
// [0,keySpace)) into `ranges` ranges of (nearly) equal size. It prefers
// one-byte split keys when one lies within 1/(10*ranges) of the ideal
// quantile, and otherwise uses the varint prefix of the quantile key.
func SplitKeys(keySpace, keySize, ranges int) [][]byte {
	if ranges <= 1 || keySpace <= 0 {
		return nil
	}
	keys := make([][]byte, keySpace)
	for n := range keySpace {
		keys[n] = varintPrefix(n)
	}
	sort.Slice(keys, func(i, j int) bool { return bytes.Compare(keys[i], keys[j]) < 0 })
	// below[b] = number of keys whose first byte is < b.
	var below [257]int
	for _, k := range keys {
		below[int(k[0])+1]++
	}
	for b := 1; b <= 256; b++ {
		below[b] += below[b-1]
	}
	tol := float64(keySpace) / float64(10*ranges)
	var out [][]byte
	for i := 1; i < ranges; i++ {
		ideal := float64(i) * float64(keySpace) / float64(ranges)
		best, bestErr := -1, math.Inf(1)
		for b := 1; b < 256; b++ {
			if e := math.Abs(float64(below[b]) - ideal); e <= bestErr { // ties: the later byte
				best, bestErr = b, e
			}
		}
		var split []byte
		if bestErr <= tol {
			split = []byte{byte(best)}
		} else {
			split = keys[int(ideal)]
		}
		if len(out) > 0 && bytes.Compare(split, out[len(out)-1]) <= 0 {
			continue // tiny key spaces: skip duplicates
		}
		out = append(out, split)
	}
	return out
}

func varintPrefix(n int) []byte {
	var b [binary.MaxVarintLen64]byte
	l := binary.PutVarint(b[:], int64(n))
	return append([]byte(nil), b[:l]...)
}

// Spread reports how many of the keys of the key space fall into each of the
// ranges cut by splits (for the report).
func Spread(keySpace, keySize int, splits [][]byte) []int {
	counts := make([]int, len(splits)+1)
	for n := range keySpace {
		k := benchmarkKey(n, keySize)
		i := sort.Search(len(splits), func(i int) bool { return bytes.Compare(k, splits[i]) < 0 })
		counts[i]++
	}
	return counts
}
