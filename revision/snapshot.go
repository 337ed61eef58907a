package revision

import (
	"encoding/binary"
	"errors"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/actors"
	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
)

// Snapshots of the oracle, for a replica its leader's truncated log no
// longer reaches (in a cluster). The oracle's state is self-contained:
// ranges decide nothing from it after the fact (their logs carry their
// decisions), so a snapshot is the state and the transaction fates known,
// at the applied index.

const oracleSnapMagic = "OSNP1"

// makeSnapshot is the group's snapshot maker.
func (a *oracleActor) makeSnapshot() (*raftpb.Snapshot, error) {
	st, err := proto.Marshal(a.state.pb)
	if err != nil {
		return nil, err
	}
	data := append([]byte(oracleSnapMagic), binary.AppendUvarint(nil, uint64(len(st)))...)
	data = append(data, st...)
	for txn, rev := range a.state.txns {
		data = binary.BigEndian.AppendUint64(data, txn)
		data = binary.BigEndian.AppendUint64(data, uint64(rev))
	}
	return a.group.SnapshotAt(a.state.pb.AppliedIndex, data)
}

func decodeOracleSnapshot(data []byte) (*raftcmdpb.OracleState, map[uint64]int64, error) {
	bad := errors.New("revision: corrupt oracle snapshot")
	if len(data) < len(oracleSnapMagic) || string(data[:len(oracleSnapMagic)]) != oracleSnapMagic {
		return nil, nil, bad
	}
	rest := data[len(oracleSnapMagic):]
	n, k := binary.Uvarint(rest)
	if k <= 0 || uint64(len(rest)-k) < n {
		return nil, nil, bad
	}
	st := &raftcmdpb.OracleState{}
	if err := proto.Unmarshal(rest[k:k+int(n)], st); err != nil {
		return nil, nil, err
	}
	rest = rest[k+int(n):]
	if len(rest)%16 != 0 {
		return nil, nil, bad
	}
	fates := make(map[uint64]int64, len(rest)/16)
	for ; len(rest) > 0; rest = rest[16:] {
		fates[binary.BigEndian.Uint64(rest)] = int64(binary.BigEndian.Uint64(rest[8:]))
	}
	return st, fates, nil
}

// restoreSnapshot saves a received snapshot's state (keeping this member's
// id) and takes it as the replica's state.
func (a *oracleActor) restoreSnapshot(snap *raftpb.Snapshot) error {
	st, fates, err := decodeOracleSnapshot(snap.GetData())
	if err != nil {
		return err
	}
	st.MemberId = a.state.pb.MemberId
	st.AppliedIndex = snap.GetMetadata().GetIndex()
	if err := a.cfg.Meta.SaveSnapshot(st, fates, snap.GetMetadata()); err != nil {
		return err
	}
	a.state = NewState(st, fates)
	a.dirty = map[uint64]int64{}
	a.gone = nil
	a.saved = st.AppliedIndex
	a.proposing = false
	a.cfg.Logger.Info("installed a snapshot of the revision oracle", zap.Uint64("index", st.AppliedIndex), zap.Int64("revision", st.Revision), zap.Int("fates", len(fates)))
	return nil
}

// snapshotRestored tells the node, once the log records the snapshot.
func (a *oracleActor) snapshotRestored(*raftpb.Snapshot) {
	a.leaseChanges = nil
	a.rebuildLeases = true // the lease set is built anew from the state
	a.publish()
	if a.cfg.OnMembers != nil {
		a.cfg.OnMembers(a.state.pb.Members)
	}
	if a.cfg.OnRestore != nil {
		a.cfg.OnRestore()
	}
}

// recordSavedSnapshot makes the Raft log record a snapshot whose state was
// saved before a stop cut its install short (the state is ahead of the log).
func (a *oracleActor) recordSavedSnapshot(st *raftcmdpb.OracleState) error {
	gl, err := a.cfg.Logs.Load(GroupID)
	if err != nil {
		return err
	}
	last := gl.Snap.GetIndex() + uint64(len(gl.Entries))
	if st.AppliedIndex <= last {
		return nil
	}
	meta, err := a.cfg.Meta.SnapshotMeta()
	if err != nil {
		return err
	}
	if meta == nil || meta.GetIndex() != st.AppliedIndex {
		return errors.New("revision: the saved state is past the Raft log and no snapshot explains it")
	}
	done := make(chan error, 1)
	a.cfg.Logs.Submit(&actors.LogWrite{Group: GroupID, Snap: meta, Done: func(err error) { done <- err }})
	return <-done
}
