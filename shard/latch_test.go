package shard

import "testing"

func k(s string) Span    { return Span{Key: []byte(s)} }
func r(a, b string) Span { return Span{Key: []byte(a), End: []byte(b)} }
func set(txn uint64, reads, writes []Span) *latchSet {
	return &latchSet{txn: txn, reads: reads, writes: writes}
}

func TestSpanOverlaps(t *testing.T) {
	cases := []struct {
		a, b Span
		want bool
	}{
		{k("a"), k("a"), true},
		{k("a"), k("b"), false},
		{k("a"), r("a", "b"), true},
		{k("b"), r("a", "b"), false},
		{r("a", "c"), r("b", "d"), true},
		{r("a", "b"), r("b", "c"), false},
		{Span{Key: []byte("x"), End: []byte{0}}, k("zzz"), true},
		{Span{Key: []byte("x"), End: []byte{0}}, k("a"), false},
		{k("a"), k("a\x00"), false},
	}
	for _, c := range cases {
		if got := c.a.overlaps(c.b); got != c.want {
			t.Errorf("%q overlaps %q = %v, want %v", c.a, c.b, got, c.want)
		}
		if got := c.b.overlaps(c.a); got != c.want {
			t.Errorf("%q overlaps %q = %v, want %v (symmetry)", c.b, c.a, got, c.want)
		}
	}
}

func TestLatchesConflictRules(t *testing.T) {
	var l latches
	if !l.acquire(set(1, []Span{k("a")}, nil)) {
		t.Fatal("first read latch not granted")
	}
	if !l.acquire(set(2, []Span{k("a")}, nil)) {
		t.Fatal("read+read must not conflict")
	}
	if !l.acquire(set(3, nil, []Span{k("b")})) {
		t.Fatal("write on another key must be granted")
	}
	if !l.acquire(set(4, nil, []Span{k("b")})) {
		t.Fatal("blind write+write must not conflict")
	}
	if l.acquire(set(5, nil, []Span{k("a")})) {
		t.Fatal("write must wait for reads on the same key")
	}
	// A later reader of "a" must queue behind the waiting writer (FIFO).
	if l.acquire(set(6, []Span{r("a", "c")}, nil)) {
		t.Fatal("reader overlapping a waiting writer must queue")
	}
	if g := l.release(1); len(g) != 0 {
		t.Fatalf("txn 2 still reads a; granted %v", g)
	}
	g := l.release(2)
	if len(g) != 1 || g[0].txn != 5 {
		t.Fatalf("releasing the reads must grant writer 5, got %v", g)
	}
	// 6 reads [a,c): conflicts with writers 3,4 on b and 5 on a.
	for _, txn := range []uint64{3, 4} {
		if g := l.release(txn); len(g) != 0 {
			t.Fatalf("release %d granted %v early", txn, g)
		}
	}
	g = l.release(5)
	if len(g) != 1 || g[0].txn != 6 {
		t.Fatalf("want 6 granted, got %v", g)
	}
	l.release(6)
	if !l.idle() {
		t.Fatal("latches not idle after all releases")
	}
}
