package revision

import (
	"encoding/binary"

	"go.etcd.io/raft/v3/raftpb"
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

// saveChunk bounds the fates written by one MVCC transaction: a checkpoint
// after a busy interval carries tens of thousands, more than one badger
// transaction takes.
const saveChunk = 4096

// Save writes the changed transaction fates, in bounded transactions, and
// then the state. The state's applied index is what a restart replays the
// log from, so it is written last: a crash part way leaves the old state,
// and the replay re-derives every fate the lost part held (and forgotten
// fates reappearing is harmless: they are pruned again).
func (p *Persister) Save(st *raftcmdpb.OracleState, fates map[uint64]int64, forget []uint64) error {
	b, err := proto.Marshal(st)
	if err != nil {
		return err
	}
	if err := p.saveFates(fates, forget); err != nil {
		return err
	}
	return p.Store.Update(func(w *mvcc.Writer) error { return w.SetMeta(stateKey, b) })
}

// saveFates writes fates and forgets others, in bounded transactions.
func (p *Persister) saveFates(fates map[uint64]int64, forget []uint64) error {
	type op struct {
		id  uint64
		rev int64
		del bool
	}
	ops := make([]op, 0, len(fates)+len(forget))
	for id, rev := range fates {
		ops = append(ops, op{id: id, rev: rev})
	}
	for _, id := range forget {
		ops = append(ops, op{id: id, del: true})
	}
	for len(ops) > 0 {
		n := min(len(ops), saveChunk)
		chunk := ops[:n]
		ops = ops[n:]
		err := p.Store.Update(func(w *mvcc.Writer) error {
			for _, o := range chunk {
				var err error
				if o.del {
					err = w.DeleteMeta(txnKey(o.id))
				} else {
					err = w.SetMeta(txnKey(o.id), binary.BigEndian.AppendUint64(nil, uint64(o.rev)))
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

var snapMetaKey = []byte("o/snap")

// SaveSnapshot saves a state received as a Raft snapshot, with the
// snapshot's metadata in the same transaction as the state: if the node
// stops before its Raft log records the snapshot, the next start records
// it from there (SnapshotMeta).
func (p *Persister) SaveSnapshot(st *raftcmdpb.OracleState, fates map[uint64]int64, meta *raftpb.SnapshotMetadata) error {
	if err := p.saveFates(fates, nil); err != nil {
		return err
	}
	b, err := proto.Marshal(st)
	if err != nil {
		return err
	}
	m, err := proto.Marshal(meta)
	if err != nil {
		return err
	}
	return p.Store.Update(func(w *mvcc.Writer) error {
		if err := w.SetMeta(stateKey, b); err != nil {
			return err
		}
		return w.SetMeta(snapMetaKey, m)
	})
}

// SnapshotMeta is the metadata of the last snapshot saved, if any.
func (p *Persister) SnapshotMeta() (*raftpb.SnapshotMetadata, error) {
	var meta *raftpb.SnapshotMetadata
	err := p.Store.View(func(r *mvcc.Reader) error {
		b, err := r.Meta(snapMetaKey)
		if err != nil || b == nil {
			return err
		}
		meta = &raftpb.SnapshotMetadata{}
		return proto.Unmarshal(b, meta)
	})
	return meta, err
}
