package mvcc

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

type logicalKey struct {
	key []byte
	rev int64
}

func compareLogical(a, b logicalKey) int {
	if c := bytes.Compare(a.key, b.key); c != 0 {
		return c
	}
	switch {
	case a.rev > b.rev:
		return -1
	case a.rev < b.rev:
		return 1
	}
	return 0
}

// randKey favours the bytes the escaping treats specially.
func randKey(rng *rand.Rand, maxLen int) []byte {
	alphabet := []byte{0x00, 0x01, 0x02, 0xFE, 0xFF, 'a'}
	k := make([]byte, rng.IntN(maxLen+1))
	for i := range k {
		if rng.IntN(3) == 0 {
			k[i] = byte(rng.IntN(256))
		} else {
			k[i] = alphabet[rng.IntN(len(alphabet))]
		}
	}
	return k
}

func TestDataKeyOrderMatchesLogicalOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	revs := []int64{1, 2, 255, 256, 1 << 32, math.MaxInt64 - 1}
	for round := 0; round < 200; round++ {
		var ks []logicalKey
		for i := 0; i < 50; i++ {
			rev := revs[rng.IntN(len(revs))]
			if rng.IntN(2) == 0 {
				rev = rng.Int64N(1000) + 1
			}
			ks = append(ks, logicalKey{randKey(rng, 6), rev})
		}
		byLogical := slices.Clone(ks)
		slices.SortStableFunc(byLogical, compareLogical)
		byEncoded := slices.Clone(ks)
		slices.SortStableFunc(byEncoded, func(a, b logicalKey) int {
			return bytes.Compare(dataKey(a.key, a.rev), dataKey(b.key, b.rev))
		})
		for i := range byLogical {
			if compareLogical(byLogical[i], byEncoded[i]) != 0 {
				t.Fatalf("round %d: position %d: logical %q@%d, encoded %q@%d", round, i,
					byLogical[i].key, byLogical[i].rev, byEncoded[i].key, byEncoded[i].rev)
			}
		}
	}
}

func TestDataKeyRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 2000; i++ {
		key := randKey(rng, 8)
		rev := rng.Int64N(math.MaxInt64-1) + 1
		k := dataKey(key, rev)
		p, gotRev, err := splitDataKey(k)
		if err != nil || gotRev != rev {
			t.Fatalf("splitDataKey(%q) = %d, %v; want %d", k, gotRev, err, rev)
		}
		gotKey, rest, err := unescape(p[1:])
		if err != nil || !bytes.Equal(gotKey, key) || len(rest) != 0 {
			t.Fatalf("unescape(%q) = %q, %q, %v; want %q", p[1:], gotKey, rest, err, key)
		}
		if n := unescapedLen(p[1 : len(p)-2]); n != len(key) {
			t.Fatalf("unescapedLen = %d, want %d", n, len(key))
		}
		buf := make([]byte, len(key))
		unescapeInto(buf, p[1:])
		if !bytes.Equal(buf, key) {
			t.Fatalf("unescapeInto = %q, want %q", buf, key)
		}
	}
}

func FuzzDataKeyOrder(f *testing.F) {
	f.Add([]byte("a"), int64(1), []byte("a\x00"), int64(2))
	f.Add([]byte("\x00\xff"), int64(5), []byte("\x00"), int64(5))
	f.Fuzz(func(t *testing.T, a []byte, ra int64, b []byte, rb int64) {
		if ra <= 0 || rb <= 0 {
			return
		}
		want := compareLogical(logicalKey{a, ra}, logicalKey{b, rb})
		if got := bytes.Compare(dataKey(a, ra), dataKey(b, rb)); got != want {
			t.Fatalf("%q@%d vs %q@%d: encoded %d, logical %d", a, ra, b, rb, got, want)
		}
	})
}

func TestChangeKeyOrder(t *testing.T) {
	type ck struct {
		rev int64
		sub int32
		key []byte
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var cs []ck
	for i := 0; i < 500; i++ {
		cs = append(cs, ck{rng.Int64N(5) + 1, rng.Int32N(3), randKey(rng, 4)})
	}
	logical := slices.Clone(cs)
	slices.SortStableFunc(logical, func(a, b ck) int {
		switch {
		case a.rev != b.rev:
			return int(a.rev - b.rev)
		case a.sub != b.sub:
			return int(a.sub - b.sub)
		}
		return bytes.Compare(a.key, b.key)
	})
	enc := slices.Clone(cs)
	slices.SortStableFunc(enc, func(a, b ck) int {
		return bytes.Compare(changeKey(a.rev, a.sub, a.key), changeKey(b.rev, b.sub, b.key))
	})
	for i := range logical {
		l, e := logical[i], enc[i]
		if l.rev != e.rev || l.sub != e.sub || !bytes.Equal(l.key, e.key) {
			t.Fatalf("position %d: logical %+v, encoded %+v", i, l, e)
		}
		rev, sub, esc, err := splitChangeKey(changeKey(l.rev, l.sub, l.key))
		if err != nil || rev != l.rev || sub != l.sub || !bytes.Equal(esc, appendEscaped(nil, l.key)) {
			t.Fatalf("splitChangeKey round trip failed for %+v", l)
		}
	}
}

func TestValueHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		h     valueHeader
		value []byte
	}{
		{valueHeader{createRevision: 1, version: 1}, nil},
		{valueHeader{createRevision: math.MaxInt64, version: 1 << 40, lease: 0x7fff_ffff_ffff_ffff}, []byte("v")},
		{valueHeader{createRevision: 3, version: 2, lease: 99}, bytes.Repeat([]byte{0}, 100)},
		{valueHeader{flags: flagTombstone}, nil},
	}
	for _, tt := range tests {
		h, v, err := decodeValue(encodeValue(tt.h, tt.value))
		if err != nil || h != tt.h || !bytes.Equal(v, tt.value) {
			t.Errorf("round trip of %+v %q = %+v %q %v", tt.h, tt.value, h, v, err)
		}
	}
	for _, bad := range [][]byte{nil, {0}, {0, 0x80}, {0, 1, 1}} {
		if _, _, err := decodeValue(bad); err == nil {
			t.Errorf("decodeValue(%q) accepted a truncated value", bad)
		}
	}
	for _, bad := range [][]byte{{0x00, 'a'}, {'a'}, {0x00, 0x05}} {
		if _, _, err := unescape(bad); err == nil {
			t.Errorf("unescape(%q) accepted a malformed key", bad)
		}
	}
}
