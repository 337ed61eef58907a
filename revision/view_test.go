package revision

import (
	"testing"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
)

// TestViewLookups: RangeFor finds the range holding a key (binary search over the starts)
// and RangeByID a range by id, at every boundary.
func TestViewLookups(t *testing.T) {
	v := &View{Ranges: []*raftcmdpb.RangeDesc{
		{Id: 1, End: []byte("b")},
		{Id: 4, Start: []byte("b"), End: []byte("b\x00")},
		{Id: 2, Start: []byte("b\x00"), End: []byte("m")},
		{Id: 3, Start: []byte("m")},
	}}
	for key, want := range map[string]uint64{
		"": 1, "a": 1, "az": 1, "b": 4, "b\x00": 2, "c": 2, "l\xff": 2, "m": 3, "\xff\xff": 3,
	} {
		if got := v.RangeFor([]byte(key)); got == nil || got.Id != want {
			t.Errorf("RangeFor(%q) = %v, want range %d", key, got, want)
		}
	}
	for _, id := range []uint64{1, 2, 3, 4} {
		if got := v.RangeByID(id); got == nil || got.Id != id {
			t.Errorf("RangeByID(%d) = %v", id, got)
		}
	}
	if got := v.RangeByID(9); got != nil {
		t.Errorf("RangeByID(9) = %v, want none", got)
	}
	if got := (&View{}).RangeFor([]byte("a")); got != nil {
		t.Errorf("RangeFor on an empty view = %v", got)
	}
}
