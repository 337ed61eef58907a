package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

func openMem(t testing.TB) *Store {
	t.Helper()
	s, err := Open("", Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustUpdate(t testing.TB, s *Store, fn func(w *Writer) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func put(t testing.TB, s *Store, rev int64, key, value string) {
	t.Helper()
	mustUpdate(t, s, func(w *Writer) error {
		_, err := w.Put(rev, 0, Put{Key: []byte(key), Value: []byte(value)})
		return err
	})
}

func del(t testing.TB, s *Store, rev int64, key, end string) []*mvccpb.KeyValue {
	t.Helper()
	var out []*mvccpb.KeyValue
	mustUpdate(t, s, func(w *Writer) error {
		var err error
		out, err = w.DeleteRange(rev, 0, []byte(key), []byte(end))
		return err
	})
	return out
}

func rangeAt(t testing.TB, s *Store, key, end string, rev int64, o ReadOptions) (RangeResult, error) {
	t.Helper()
	var res RangeResult
	err := s.View(func(r *Reader) error {
		var err error
		res, err = r.Range([]byte(key), bytesOrNil(end), rev, o)
		return err
	})
	return res, err
}

func bytesOrNil(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// kvString renders KVs compactly: key=value@mod/create/version[/lease].
func kvString(kvs []*mvccpb.KeyValue) string {
	var parts []string
	for _, kv := range kvs {
		parts = append(parts, kvOne(kv))
	}
	return strings.Join(parts, " ")
}

func kvOne(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "<nil>"
	}
	s := fmt.Sprintf("%q", kv.Key)
	if kv.Value != nil {
		s += fmt.Sprintf("=%q", kv.Value)
	}
	s += fmt.Sprintf("@%d/%d/%d", kv.ModRevision, kv.CreateRevision, kv.Version)
	if kv.Lease != 0 {
		s += fmt.Sprintf("/L%d", kv.Lease)
	}
	return s
}

// history builds:
//
//	1 put a=1
//	2 put b=2
//	3 put a=3 lease 7
//	4 delete a
//	5 put a=5
//	6 txn: put c=6 (sub 0), put d=6 (sub 1), delete b (sub 2)
//	7 put "a\x00"=z, put "\x00"=zero
func history(t testing.TB) *Store {
	s := openMem(t)
	put(t, s, 1, "a", "1")
	put(t, s, 2, "b", "2")
	mustUpdate(t, s, func(w *Writer) error {
		_, err := w.Put(3, 0, Put{Key: []byte("a"), Value: []byte("3"), Lease: 7})
		return err
	})
	del(t, s, 4, "a", "")
	put(t, s, 5, "a", "5")
	mustUpdate(t, s, func(w *Writer) error {
		if _, err := w.Put(6, 0, Put{Key: []byte("c"), Value: []byte("6")}); err != nil {
			return err
		}
		if _, err := w.Put(6, 1, Put{Key: []byte("d"), Value: []byte("6")}); err != nil {
			return err
		}
		_, err := w.DeleteRange(6, 2, []byte("b"), nil)
		return err
	})
	mustUpdate(t, s, func(w *Writer) error {
		if _, err := w.Put(7, 0, Put{Key: []byte("a\x00"), Value: []byte("z")}); err != nil {
			return err
		}
		_, err := w.Put(7, 1, Put{Key: []byte("\x00"), Value: []byte("zero")})
		return err
	})
	return s
}

func TestRange(t *testing.T) {
	s := history(t)
	tests := []struct {
		name     string
		key, end string
		rev      int64
		o        ReadOptions
		want     string
		count    int64
	}{
		{"single at 1", "a", "", 1, ReadOptions{}, `"a"="1"@1/1/1`, 1},
		{"single at 2", "a", "", 2, ReadOptions{}, `"a"="1"@1/1/1`, 1},
		{"update keeps create, bumps version", "a", "", 3, ReadOptions{}, `"a"="3"@3/1/2/L7`, 1},
		{"tombstone hides key", "a", "", 4, ReadOptions{}, ``, 0},
		{"recreate restarts version", "a", "", 5, ReadOptions{}, `"a"="5"@5/5/1`, 1},
		{"latest", "a", "", 0, ReadOptions{}, `"a"="5"@5/5/1`, 1},
		{"before first write", "a", "", 0 + 0, ReadOptions{}, `"a"="5"@5/5/1`, 1},
		{"range at 2", "a", "c", 2, ReadOptions{}, `"a"="1"@1/1/1 "b"="2"@2/2/1`, 2},
		{"range at 4", "a", "z", 4, ReadOptions{}, `"b"="2"@2/2/1`, 1},
		{"range at 6", "a", "z", 6, ReadOptions{}, `"a"="5"@5/5/1 "c"="6"@6/6/1 "d"="6"@6/6/1`, 3},
		{"end exclusive", "a", "d", 6, ReadOptions{}, `"a"="5"@5/5/1 "c"="6"@6/6/1`, 2},
		{"empty span", "d", "a", 6, ReadOptions{}, ``, 0},
		{"all keys", "\x00", "\x00", 0, ReadOptions{}, `"\x00"="zero"@7/7/1 "a"="5"@5/5/1 "a\x00"="z"@7/7/1 "c"="6"@6/6/1 "d"="6"@6/6/1`, 5},
		{"from key", "b", "\x00", 0, ReadOptions{}, `"c"="6"@6/6/1 "d"="6"@6/6/1`, 2},
		{"prefix a", "a", "b", 0, ReadOptions{}, `"a"="5"@5/5/1 "a\x00"="z"@7/7/1`, 2},
		{"limit", "\x00", "\x00", 0, ReadOptions{Limit: 2}, `"\x00"="zero"@7/7/1 "a"="5"@5/5/1`, 5},
		{"limit above count", "a", "z", 0, ReadOptions{Limit: 10}, `"a"="5"@5/5/1 "a\x00"="z"@7/7/1 "c"="6"@6/6/1 "d"="6"@6/6/1`, 4},
		{"keys only", "a", "z", 3, ReadOptions{KeysOnly: true}, `"a"@3/1/2/L7 "b"@2/2/1`, 2},
		{"count only", "\x00", "\x00", 6, ReadOptions{CountOnly: true}, ``, 3},
		{"count only limit", "\x00", "\x00", 6, ReadOptions{CountOnly: true, Limit: 1}, ``, 3},
		{"future rev reads latest known", "a", "z", 100, ReadOptions{}, `"a"="5"@5/5/1 "a\x00"="z"@7/7/1 "c"="6"@6/6/1 "d"="6"@6/6/1`, 4},
		{"missing key", "zz", "", 0, ReadOptions{}, ``, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := rangeAt(t, s, tt.key, tt.end, tt.rev, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if got := kvString(res.KVs); got != tt.want || res.Count != tt.count {
				t.Errorf("Range(%q, %q, %d, %+v) = %s count %d; want %s count %d",
					tt.key, tt.end, tt.rev, tt.o, got, res.Count, tt.want, tt.count)
			}
		})
	}
}

func TestGet(t *testing.T) {
	s := history(t)
	tests := []struct {
		key  string
		rev  int64
		want string
	}{
		{"a", 0, `"a"="5"@5/5/1`},
		{"a", 3, `"a"="3"@3/1/2/L7`},
		{"a", 4, `<nil>`},
		{"b", 6, `<nil>`},
		{"b", 5, `"b"="2"@2/2/1`},
		{"a\x00", 0, `"a\x00"="z"@7/7/1`},
		{"nope", 0, `<nil>`},
	}
	for _, tt := range tests {
		err := s.View(func(r *Reader) error {
			kv, err := r.Get([]byte(tt.key), tt.rev)
			if err != nil {
				return err
			}
			if got := kvOne(kv); got != tt.want {
				t.Errorf("Get(%q, %d) = %s, want %s", tt.key, tt.rev, got, tt.want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestPutAndDeleteReturnPrevious(t *testing.T) {
	s := openMem(t)
	mustUpdate(t, s, func(w *Writer) error {
		prev, err := w.Put(1, 0, Put{Key: []byte("k"), Value: []byte("v1"), Lease: 5})
		if err != nil || prev != nil {
			t.Errorf("first put: prev %s err %v", kvOne(prev), err)
		}
		return nil
	})
	mustUpdate(t, s, func(w *Writer) error {
		prev, err := w.Put(2, 0, Put{Key: []byte("k"), IgnoreValue: true, IgnoreLease: true})
		if err != nil || kvOne(prev) != `"k"="v1"@1/1/1/L5` {
			t.Errorf("ignore put: prev %s err %v", kvOne(prev), err)
		}
		return nil
	})
	res, _ := rangeAt(t, s, "k", "", 0, ReadOptions{})
	if got := kvString(res.KVs); got != `"k"="v1"@2/1/2/L5` {
		t.Errorf("after ignore_value/ignore_lease put: %s", got)
	}
	mustUpdate(t, s, func(w *Writer) error {
		prev, err := w.Put(3, 0, Put{Key: []byte("k"), Value: []byte("v3"), IgnoreLease: true})
		if err != nil || kvOne(prev) != `"k"="v1"@2/1/2/L5` {
			t.Errorf("put: prev %s err %v", kvOne(prev), err)
		}
		return nil
	})
	if got := kvString(del(t, s, 4, "a", "z")); got != `"k"="v3"@3/1/3/L5` {
		t.Errorf("delete returned %s", got)
	}
	if got := del(t, s, 5, "a", "z"); len(got) != 0 {
		t.Errorf("second delete returned %s", kvString(got))
	}
	err := s.Update(func(w *Writer) error {
		_, err := w.Put(6, 0, Put{Key: []byte("k"), IgnoreValue: true})
		return err
	})
	if !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("ignore_value on deleted key: err %v, want ErrKeyNotFound", err)
	}
}

func TestWriteOrderViolations(t *testing.T) {
	s := openMem(t)
	put(t, s, 5, "k", "v")
	tests := []struct {
		name string
		fn   func(w *Writer) error
		want error
	}{
		{"same revision", func(w *Writer) error {
			_, err := w.Put(5, 1, Put{Key: []byte("k")})
			return err
		}, ErrRevision},
		{"older revision", func(w *Writer) error {
			_, err := w.Put(4, 0, Put{Key: []byte("k")})
			return err
		}, ErrRevision},
		{"delete at same revision", func(w *Writer) error {
			_, err := w.DeleteRange(5, 0, []byte("k"), nil)
			return err
		}, ErrRevision},
		{"duplicate inside one update", func(w *Writer) error {
			if _, err := w.Put(6, 0, Put{Key: []byte("x")}); err != nil {
				return err
			}
			_, err := w.Put(6, 1, Put{Key: []byte("x")})
			return err
		}, ErrRevision},
	}
	for _, tt := range tests {
		if err := s.Update(tt.fn); !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
	for _, bad := range []struct {
		rev int64
		sub int32
		key string
	}{{0, 0, "k"}, {-1, 0, "k"}, {7, -1, "k"}, {7, 0, ""}} {
		err := s.Update(func(w *Writer) error {
			_, err := w.Put(bad.rev, bad.sub, Put{Key: []byte(bad.key)})
			return err
		})
		if err == nil {
			t.Errorf("Put(%d, %d, %q) accepted", bad.rev, bad.sub, bad.key)
		}
	}
}

func TestReadYourWrites(t *testing.T) {
	s := history(t)
	mustUpdate(t, s, func(w *Writer) error {
		if _, err := w.Put(8, 0, Put{Key: []byte("e"), Value: []byte("8")}); err != nil {
			return err
		}
		if _, err := w.DeleteRange(8, 1, []byte("c"), []byte("d")); err != nil {
			return err
		}
		if _, err := w.Put(8, 2, Put{Key: []byte("a"), Value: []byte("8")}); err != nil {
			return err
		}
		res, err := w.Range([]byte("a"), []byte("z"), 8, ReadOptions{})
		if err != nil {
			return err
		}
		want := `"a"="8"@8/5/2 "a\x00"="z"@7/7/1 "d"="6"@6/6/1 "e"="8"@8/8/1`
		if got := kvString(res.KVs); got != want {
			t.Errorf("inside update: %s, want %s", got, want)
		}
		res, err = w.Range([]byte("a"), []byte("z"), 7, ReadOptions{})
		if err != nil {
			return err
		}
		want = `"a"="5"@5/5/1 "a\x00"="z"@7/7/1 "c"="6"@6/6/1 "d"="6"@6/6/1`
		if got := kvString(res.KVs); got != want {
			t.Errorf("inside update at 7: %s, want %s", got, want)
		}
		ch, err := w.Changes([]byte("a"), []byte("z"), 8, 8, 0)
		if err != nil {
			return err
		}
		if got := changesString(ch); got != `8.0 PUT "e"="8"@8/8/1 | 8.1 DELETE "c"@8/0/0 prev "c"="6"@6/6/1 | 8.2 PUT "a"="8"@8/5/2 prev "a"="5"@5/5/1` {
			t.Errorf("changes inside update: %s", got)
		}
		return w.SetMeta([]byte("applied"), []byte("8"))
	})
	err := s.View(func(r *Reader) error {
		v, err := r.Meta([]byte("applied"))
		if string(v) != "8" {
			t.Errorf("meta = %q, want 8", v)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func changesString(cs []Change) string {
	var parts []string
	for _, c := range cs {
		s := fmt.Sprintf("%d.%d %s %s", c.Rev, c.Sub, c.Event.Type, kvOne(c.Event.Kv))
		if c.Event.PrevKv != nil {
			s += " prev " + kvOne(c.Event.PrevKv)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " | ")
}

func TestChanges(t *testing.T) {
	s := history(t)
	tests := []struct {
		name     string
		key, end string
		from, to int64
		limit    int
		want     string
	}{
		{"one key all", "a", "", 1, 0, 0, `1.0 PUT "a"="1"@1/1/1 | 3.0 PUT "a"="3"@3/1/2/L7 prev "a"="1"@1/1/1 | 4.0 DELETE "a"@4/0/0 prev "a"="3"@3/1/2/L7 | 5.0 PUT "a"="5"@5/5/1`},
		{"window", "a", "z", 4, 6, 0, `4.0 DELETE "a"@4/0/0 prev "a"="3"@3/1/2/L7 | 5.0 PUT "a"="5"@5/5/1 | 6.0 PUT "c"="6"@6/6/1 | 6.1 PUT "d"="6"@6/6/1 | 6.2 DELETE "b"@6/0/0 prev "b"="2"@2/2/1`},
		{"limit keeps revision whole", "\x00", "\x00", 5, 0, 2, `5.0 PUT "a"="5"@5/5/1 | 6.0 PUT "c"="6"@6/6/1 | 6.1 PUT "d"="6"@6/6/1 | 6.2 DELETE "b"@6/0/0 prev "b"="2"@2/2/1`},
		{"prefix", "a", "b", 6, 0, 0, `7.0 PUT "a\x00"="z"@7/7/1`},
		{"sub order", "\x00", "\x00", 7, 7, 0, `7.0 PUT "a\x00"="z"@7/7/1 | 7.1 PUT "\x00"="zero"@7/7/1`},
		{"nothing", "zz", "", 1, 0, 0, ``},
		{"to before from", "a", "", 5, 4, 0, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.View(func(r *Reader) error {
				cs, err := r.Changes([]byte(tt.key), bytesOrNil(tt.end), tt.from, tt.to, tt.limit)
				if err != nil {
					return err
				}
				if got := changesString(cs); got != tt.want {
					t.Errorf("got  %s\nwant %s", got, tt.want)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestUpdateErrorWritesNothing(t *testing.T) {
	s := openMem(t)
	put(t, s, 1, "k", "v1")
	boom := errors.New("boom")
	err := s.Update(func(w *Writer) error {
		if _, err := w.Put(2, 0, Put{Key: []byte("k"), Value: []byte("v2")}); err != nil {
			return err
		}
		if _, err := w.DeleteRange(2, 1, []byte("a"), []byte("j")); err != nil {
			return err
		}
		if err := w.SetMeta([]byte("applied"), []byte("2")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update err %v, want boom", err)
	}
	err = s.View(func(r *Reader) error {
		kv, err := r.Get([]byte("k"), 0)
		if err != nil {
			return err
		}
		if kvOne(kv) != `"k"="v1"@1/1/1` {
			t.Errorf("data after failed update: %s", kvOne(kv))
		}
		m, err := r.Meta([]byte("applied"))
		if m != nil {
			t.Errorf("meta after failed update: %q", m)
		}
		cs, _ := r.Changes([]byte("\x00"), []byte("\x00"), 2, 0, 0)
		if len(cs) != 0 {
			t.Errorf("changes after failed update: %s", changesString(cs))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMeta(t *testing.T) {
	s := openMem(t)
	mustUpdate(t, s, func(w *Writer) error {
		for _, k := range []string{"shard/1/applied", "shard/1/intent/a", "shard/2/applied", "shard/10/applied"} {
			if err := w.SetMeta([]byte(k), []byte("v:"+k)); err != nil {
				return err
			}
		}
		return w.SetMeta([]byte("empty"), nil)
	})
	mustUpdate(t, s, func(w *Writer) error { return w.DeleteMeta([]byte("shard/2/applied")) })
	err := s.View(func(r *Reader) error {
		var got []string
		if err := r.MetaScan([]byte("shard/1/"), func(k, v []byte) error {
			got = append(got, string(k)+"="+string(v))
			return nil
		}); err != nil {
			return err
		}
		if want := "shard/1/applied=v:shard/1/applied,shard/1/intent/a=v:shard/1/intent/a"; strings.Join(got, ",") != want {
			t.Errorf("MetaScan = %v, want %s", got, want)
		}
		if v, err := r.Meta([]byte("shard/2/applied")); v != nil || err != nil {
			t.Errorf("deleted meta = %q, %v", v, err)
		}
		if v, err := r.Meta([]byte("empty")); v == nil || len(v) != 0 || err != nil {
			t.Errorf("empty meta = %#v, %v; want present and empty", v, err)
		}
		stop := errors.New("stop")
		n := 0
		err := r.MetaScan(nil, func(k, v []byte) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Errorf("MetaScan error propagation: %v after %d calls", err, n)
		}
		// Meta never leaks into data reads.
		res, err := r.Range([]byte("\x00"), []byte("\x00"), 0, ReadOptions{})
		if err != nil || res.Count != 0 {
			t.Errorf("data range over meta-only store: %d keys, %v", res.Count, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSpanStats(t *testing.T) {
	s := history(t)
	tests := []struct {
		start, end string
		keys       int64
	}{
		{"", "", 5},
		{"a", "", 4},
		{"a", "b", 2},
		{"b", "c", 0},
		{"c", "e", 2},
	}
	err := s.View(func(r *Reader) error {
		for _, tt := range tests {
			keys, size, err := r.SpanStats([]byte(tt.start), bytesOrNil(tt.end))
			if err != nil {
				return err
			}
			if keys != tt.keys {
				t.Errorf("SpanStats(%q, %q) keys = %d, want %d", tt.start, tt.end, keys, tt.keys)
			}
			if (keys == 0) != (size == 0) || size < keys*2 {
				t.Errorf("SpanStats(%q, %q) size = %d for %d keys", tt.start, tt.end, size, keys)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLargeRequestFits(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := bytes.Repeat([]byte("x"), 1536*1024)
	mustUpdate(t, s, func(w *Writer) error {
		_, err := w.Put(1, 0, Put{Key: []byte("big"), Value: big})
		return err
	})
	// 128 ops of ~12 KiB each: a full etcd Txn.
	mustUpdate(t, s, func(w *Writer) error {
		for i := 0; i < 128; i++ {
			if _, err := w.Put(2, int32(i), Put{Key: []byte(fmt.Sprintf("k%03d", i)), Value: big[:12*1024]}); err != nil {
				return err
			}
		}
		return nil
	})
	res, err := rangeAt(t, s, "big", "", 0, ReadOptions{})
	if err != nil || len(res.KVs) != 1 || !bytes.Equal(res.KVs[0].Value, big) {
		t.Fatalf("big value did not round trip: %v", err)
	}
}

func TestTooBigUpdateIsAnError(t *testing.T) {
	s, err := Open("", Options{InMemory: true, MemTableSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	val := bytes.Repeat([]byte("x"), 64*1024)
	err = s.Update(func(w *Writer) error {
		for i := 0; i < 100; i++ {
			if _, err := w.Put(1, int32(i), Put{Key: []byte(fmt.Sprintf("k%03d", i)), Value: val}); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, ErrTxnTooBig) {
		t.Fatalf("err %v, want ErrTxnTooBig", err)
	}
}

func TestSizeLimitsAreClearErrors(t *testing.T) {
	s := openMem(t)
	tests := []struct {
		name string
		p    Put
	}{
		{"key too long", Put{Key: bytes.Repeat([]byte("k"), 70000)}},
		{"value too big for in-memory store", Put{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 2<<20)}},
	}
	for _, tt := range tests {
		err := s.Update(func(w *Writer) error {
			_, err := w.Put(1, 0, tt.p)
			return err
		})
		if err == nil || len(err.Error()) > 200 {
			t.Errorf("%s: err %.300v; want a short error", tt.name, err)
		}
	}
}
