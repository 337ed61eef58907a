package revision

import (
	"bytes"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
)

// Contains reports whether key lies in the range [Start, End).
func Contains(r *raftcmdpb.RangeDesc, key []byte) bool {
	return bytes.Compare(key, r.Start) >= 0 && (len(r.End) == 0 || bytes.Compare(key, r.End) < 0)
}
