package revision

import (
	"encoding/binary"

	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// Persister keeps the oracle's state in the meta namespace of the node's
// MVCC store: "o/state" → OracleState (with its applied index), and
// "o/txn/<id>" → the transaction's revision (0 = aborted).
type Persister struct{ Store *mvcc.Store }

var (
	stateKey  = []byte("o/state")
	txnPrefix = []byte("o/txn/")
)

func txnKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), txnPrefix...), id)
}

// Load returns the stored state, or nil for a new store.
func (p *Persister) Load() (*raftcmdpb.OracleState, map[uint64]int64, error) {
	var st *raftcmdpb.OracleState
	txns := map[uint64]int64{}
	err := p.Store.View(func(r *mvcc.Reader) error {
		b, err := r.Meta(stateKey)
		if err != nil || b == nil {
			return err
		}
		st = &raftcmdpb.OracleState{}
		if err := proto.Unmarshal(b, st); err != nil {
			return err
		}
		return r.MetaScan(txnPrefix, func(k, v []byte) error {
			txns[binary.BigEndian.Uint64(k[len(txnPrefix):])] = int64(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	return st, txns, err
}

// Save writes the state and the changed transaction fates atomically.
func (p *Persister) Save(st *raftcmdpb.OracleState, fates map[uint64]int64, forget []uint64) error {
	b, err := proto.Marshal(st)
	if err != nil {
		return err
	}
	return p.Store.Update(func(w *mvcc.Writer) error {
		if err := w.SetMeta(stateKey, b); err != nil {
			return err
		}
		for id, rev := range fates {
			if err := w.SetMeta(txnKey(id), binary.BigEndian.AppendUint64(nil, uint64(rev))); err != nil {
				return err
			}
		}
		for _, id := range forget {
			if err := w.DeleteMeta(txnKey(id)); err != nil {
				return err
			}
		}
		return nil
	})
}
