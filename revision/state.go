package revision

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
)

// Errors returned by the state machine.
var (
	ErrAborted       = errors.New("revision: transaction was aborted")
	ErrLeaseNotFound = errors.New("revision: lease not found")
	ErrLeaseExists   = errors.New("revision: lease already exists")
	ErrBadSplit      = errors.New("revision: split key is not strictly inside the range")
	// ErrRangeChanged: a transaction's range split after it latched there;
	// it is aborted and may run again on the new table.
	ErrRangeChanged = errors.New("revision: a range of the transaction changed its span")
	ErrUnknownRange = errors.New("revision: unknown range")
	// ErrSplitStale: a guarded split found its range changed (another
	// generation, or a revision assigned since its splitter drained it): it
	// did not apply, and never will.
	ErrSplitStale = errors.New("revision: the range changed since its splitter drained it")
	// ErrAlreadySplit: a guarded split proposed again after it applied.
	ErrAlreadySplit = errors.New("revision: the range is already split there")
)

// Decided is one transaction's fate: Rev > 0 when decided, Rev == 0 when
// aborted.
type Decided struct {
	TxnID  uint64
	Rev    int64
	Ranges []uint64
	// Prev, when set, is for each of Ranges the revision assigned to that
	// range before this one: a replica that has not applied it yet lacks
	// an earlier decision (shard's applyReady waits for it).
	Prev []int64
}

// PrevFor is the revision assigned to range r before d's (ok false if not
// known).
func (d Decided) PrevFor(r uint64) (int64, bool) {
	if len(d.Prev) != len(d.Ranges) {
		return 0, false
	}
	for i, id := range d.Ranges {
		if id == r {
			return d.Prev[i], true
		}
	}
	return 0, false
}

// Effects is what applying one command produced, for the actor to act on.
type Effects struct {
	Decided []Decided
	Aborted []uint64
	// AbortErr is why a decision was aborted when it applied, for its
	// decider: ErrLeaseNotFound (a lease it needs is gone) or
	// ErrRangeChanged (a range it latched split since). Aborts not listed
	// get ErrAborted.
	AbortErr map[uint64]error
	// Granted is the lease a grant command added, or GrantErr.
	Granted  *raftcmdpb.Lease
	GrantErr error
	// Revoked and RevokeMissing answer revoke_leases, in order.
	RevokeErrs []error
	// LeasesChanged is set when the set of leases changed.
	LeasesChanged bool
	checkpointed  bool
	Compacted     int64 // new compaction revision, if DidCompact
	DidCompact    bool
	CompactErr    error
	Split         *SplitResult
	SplitErr      error
	// Membership is set when the member list changed.
	Membership bool
	// Replicas is set when a range's replicas changed (ReplicasErr when a
	// set_replicas command named no range).
	Replicas     bool
	ReplicasErr  error
	replicasDone bool

	// LeaseIDs are the leases granted, revoked or checkpointed.
	LeaseIDs []int64
}

// SplitResult names the two ranges a split produced.
type SplitResult struct {
	Left, Right *raftcmdpb.RangeDesc
	// StartRev: the right range holds, through its parent, every revision
	// up to this one (the parent's last revision at the split).
	StartRev int64
	// Members are the cluster's members at the split: the new range's
	// group starts with them (empty on a single node).
	Members []*raftcmdpb.Member
	// Guard is the split's guard (nil: unguarded): the member whose drained
	// range it names holds the new range's data (see router.Node.Split).
	Guard *raftcmdpb.SplitGuard
	// Replayed: the split's entry was in this replica's log when it
	// started, so an earlier run of this member may have applied it (set
	// by the oracle actor, not the state machine).
	Replayed bool
}

// State is the oracle's replicated state machine: pure, no I/O.
type State struct {
	pb *raftcmdpb.OracleState
	// txns holds the fate of recent transactions (rev, or 0 = aborted).
	txns map[uint64]int64
}

// NewState wraps a loaded (or bootstrap) OracleState and its known decisions.
func NewState(pb *raftcmdpb.OracleState, txns map[uint64]int64) *State {
	if pb.LastRev == nil {
		pb.LastRev = map[uint64]int64{}
	}
	if pb.Leases == nil {
		pb.Leases = map[int64]*raftcmdpb.Lease{}
	}
	if txns == nil {
		txns = map[uint64]int64{}
	}
	return &State{pb: pb, txns: txns}
}

// Bootstrap is the state of a brand-new store: revision 1 (as etcd starts),
// one range covering the whole keyspace.
func Bootstrap(clusterID, memberID uint64) *raftcmdpb.OracleState {
	return &raftcmdpb.OracleState{
		Revision:    1,
		Ranges:      []*raftcmdpb.RangeDesc{{Id: 1}},
		NextRangeId: 2,
		LastRev:     map[uint64]int64{},
		ClusterId:   clusterID,
		MemberId:    memberID,
	}
}

// CompactRev is etcd's compact revision: -1 before the first compaction.
func (s *State) CompactRev() int64 {
	if !s.pb.Compacted {
		return -1
	}
	return s.pb.CompactRevision
}

// Proto is the state as stored.
func (s *State) Proto() *raftcmdpb.OracleState { return s.pb }

// Fate returns a transaction's recorded fate: (rev, true) if decided,
// (0, true) if aborted, (0, false) if unknown.
func (s *State) Fate(txn uint64) (int64, bool) {
	rev, ok := s.txns[txn]
	return rev, ok
}

// Apply applies one command at Raft index. Decisions for transactions
// already aborted are reported as aborted again (never decided); repeated
// decisions are reported with their first revision.
func (s *State) Apply(index uint64, cmd *raftcmdpb.OracleCommand) Effects {
	var fx Effects
	for _, txn := range cmd.Aborts {
		if _, ok := s.txns[txn]; !ok {
			s.txns[txn] = 0
		}
		if s.txns[txn] == 0 {
			fx.Aborted = append(fx.Aborted, txn)
		}
	}
	for _, d := range cmd.Decisions {
		if rev, ok := s.txns[d.TxnId]; ok {
			if rev == 0 {
				fx.Aborted = append(fx.Aborted, d.TxnId)
			} else {
				fx.Decided = append(fx.Decided, Decided{TxnID: d.TxnId, Rev: rev, Ranges: d.Ranges})
			}
			continue
		}
		if !s.leasesExist(d) {
			s.abort(&fx, d.TxnId, ErrLeaseNotFound)
			continue
		}
		if !s.generationsMatch(d) {
			s.abort(&fx, d.TxnId, ErrRangeChanged)
			continue
		}
		if d.RevokeLease != 0 {
			delete(s.pb.Leases, d.RevokeLease)
			fx.LeasesChanged = true
			fx.LeaseIDs = append(fx.LeaseIDs, d.RevokeLease)
		}
		s.pb.Revision++
		rev := s.pb.Revision
		s.txns[d.TxnId] = rev
		prev := make([]int64, len(d.Ranges))
		for i, r := range d.Ranges {
			prev[i] = s.pb.LastRev[r]
			s.pb.LastRev[r] = rev
		}
		fx.Decided = append(fx.Decided, Decided{TxnID: d.TxnId, Rev: rev, Ranges: d.Ranges, Prev: prev})
	}
	if cmd.Compact != nil {
		c := cmd.Compact.Revision
		switch {
		case c <= s.CompactRev():
			fx.CompactErr = ErrCompactedRev
		case c > s.pb.Revision:
			fx.CompactErr = ErrFutureRev
		default:
			s.pb.CompactRevision = c
			s.pb.Compacted = true
			fx.Compacted = c
			fx.DidCompact = true
		}
	}
	if sp := cmd.Split; sp != nil {
		fx.Split, fx.SplitErr = s.split(sp)
	}
	if m := cmd.Membership; m != nil {
		s.pb.Members = m.Members
		if m.ClusterId != 0 {
			s.pb.ClusterId = m.ClusterId
		}
		fx.Membership = true
		s.fillReplicas()
	}
	if r := cmd.Replicas; r != nil {
		fx.ReplicasErr = s.setReplicas(r)
		fx.Replicas = fx.ReplicasErr == nil
		fx.replicasDone = true
	}
	if g := cmd.Grant; g != nil {
		if _, ok := s.pb.Leases[g.Id]; ok {
			fx.GrantErr = ErrLeaseExists
		} else {
			s.pb.Leases[g.Id] = g
			fx.Granted = g
			fx.LeasesChanged = true
			fx.LeaseIDs = append(fx.LeaseIDs, g.Id)
		}
	}
	for _, id := range cmd.RevokeLeases {
		if _, ok := s.pb.Leases[id]; !ok {
			fx.RevokeErrs = append(fx.RevokeErrs, ErrLeaseNotFound)
			continue
		}
		delete(s.pb.Leases, id)
		fx.RevokeErrs = append(fx.RevokeErrs, nil)
		fx.LeasesChanged = true
		fx.LeaseIDs = append(fx.LeaseIDs, id)
	}
	for _, c := range cmd.Checkpoints {
		// Replaced, not modified: published views share lease messages.
		if l, ok := s.pb.Leases[c.Id]; ok && l.Remaining != c.Remaining {
			s.pb.Leases[c.Id] = &raftcmdpb.Lease{Id: l.Id, Ttl: l.Ttl, Remaining: c.Remaining}
			fx.LeaseIDs = append(fx.LeaseIDs, c.Id)
		}
	}
	s.pb.AppliedIndex = index
	return fx
}

// abort aborts a decision as it applies, for reason err.
func (s *State) abort(fx *Effects, txn uint64, err error) {
	s.txns[txn] = 0
	fx.Aborted = append(fx.Aborted, txn)
	if fx.AbortErr == nil {
		fx.AbortErr = map[uint64]error{}
	}
	fx.AbortErr[txn] = err
}

// generationsMatch reports whether every range of a decision still has the
// generation the transaction saw (a range that is gone does not).
func (s *State) generationsMatch(d *raftcmdpb.Decision) bool {
	if len(d.Generations) == 0 {
		return true
	}
	if len(d.Generations) != len(d.Ranges) {
		return false
	}
	for i, id := range d.Ranges {
		r := s.rangeByID(id)
		if r == nil || r.Generation != d.Generations[i] {
			return false
		}
	}
	return true
}

func (s *State) rangeByID(id uint64) *raftcmdpb.RangeDesc {
	for _, r := range s.pb.Ranges {
		if r.Id == id {
			return r
		}
	}
	return nil
}

// leasesExist reports whether every lease a decision needs still exists.
func (s *State) leasesExist(d *raftcmdpb.Decision) bool {
	for _, id := range d.RequireLeases {
		if _, ok := s.pb.Leases[id]; !ok {
			return false
		}
	}
	if id := d.RevokeLease; id != 0 {
		if _, ok := s.pb.Leases[id]; !ok {
			return false
		}
	}
	return true
}

// Errors of Compact, mapped by the router to etcd's.
var (
	ErrCompactedRev = errors.New("revision: required revision has been compacted")
	ErrFutureRev    = errors.New("revision: required revision is a future revision")
)

func (s *State) split(sp *raftcmdpb.Split) (*SplitResult, error) {
	for i, r := range s.pb.Ranges {
		if r.Id != sp.RangeId {
			continue
		}
		if g := sp.Guard; g != nil {
			switch {
			case r.Generation == g.Generation && s.pb.LastRev[r.Id] == g.LastRev:
				// As its splitter drained it: it holds the new range's data.
			case r.Generation == g.Generation+1 && string(r.End) == string(sp.Key):
				// Asked again by a splitter that did not learn that it applied.
				return nil, ErrAlreadySplit
			default:
				return nil, fmt.Errorf("%w: range %d has generation %d and last revision %d, its splitter drained it at %d and %d",
					ErrSplitStale, r.Id, r.Generation, s.pb.LastRev[r.Id], g.Generation, g.LastRev)
			}
		}
		if bytes.Compare(sp.Key, r.Start) <= 0 || (len(r.End) > 0 && bytes.Compare(sp.Key, r.End) >= 0) {
			return nil, ErrBadSplit
		}
		// Both sides stay on the replicas of the range they came from.
		gen := r.Generation + 1
		right := &raftcmdpb.RangeDesc{Id: s.pb.NextRangeId, Start: bytes.Clone(sp.Key), End: r.End, Replicas: slices.Clone(r.Replicas), LeadPinned: r.LeadPinned, Generation: gen}
		left := &raftcmdpb.RangeDesc{Id: r.Id, Start: r.Start, End: bytes.Clone(sp.Key), Replicas: r.Replicas, LeadPinned: r.LeadPinned, Generation: gen}
		s.pb.NextRangeId++
		s.pb.Ranges[i] = left
		s.pb.Ranges = append(s.pb.Ranges, nil)
		copy(s.pb.Ranges[i+2:], s.pb.Ranges[i+1:])
		s.pb.Ranges[i+1] = right
		s.pb.LastRev[right.Id] = s.pb.LastRev[left.Id]
		return &SplitResult{Left: left, Right: right, StartRev: s.pb.LastRev[left.Id], Members: s.pb.Members, Guard: sp.Guard}, nil
	}
	return nil, fmt.Errorf("%w %d", ErrUnknownRange, sp.RangeId)
}

// fillReplicas gives every range that has none recorded the voting
// members as its replicas: until the first member list, every member holds
// every range (see raftcmdpb.RangeDesc).
func (s *State) fillReplicas() {
	var voters []uint64
	for _, m := range s.pb.Members {
		if !m.Learner {
			voters = append(voters, m.Id)
		}
	}
	if len(voters) == 0 {
		return
	}
	for i, r := range s.pb.Ranges {
		if len(r.Replicas) == 0 {
			s.pb.Ranges[i] = &raftcmdpb.RangeDesc{Id: r.Id, Start: r.Start, End: r.End, Replicas: slices.Clone(voters), LeadPinned: r.LeadPinned, Generation: r.Generation}
		}
	}
}

// setReplicas records a range's replicas. Descriptors are replaced, not
// modified: published views share them.
func (s *State) setReplicas(r *raftcmdpb.SetReplicas) error {
	for i, d := range s.pb.Ranges {
		if d.Id == r.RangeId {
			// The span is unchanged, and so is the generation: were it reset, a decision
			// made under the generation before an earlier split could match again.
			s.pb.Ranges[i] = &raftcmdpb.RangeDesc{Id: d.Id, Start: d.Start, End: d.End, Replicas: slices.Clone(r.Replicas), LeadPinned: r.LeadPinned, Generation: d.Generation}
			return nil
		}
	}
	return fmt.Errorf("%w %d", ErrUnknownRange, r.RangeId)
}

// Prune forgets the fate of transactions that every involved shard has
// durably applied (decided) or that are older than any live intent could be
// (aborted). keep reports whether a transaction must be remembered.
func (s *State) Prune(keep func(txn uint64, rev int64) bool) []uint64 {
	var gone []uint64
	for txn, rev := range s.txns {
		if !keep(txn, rev) {
			delete(s.txns, txn)
			gone = append(gone, txn)
		}
	}
	return gone
}
