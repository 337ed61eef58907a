package router

import (
	"sync"
	"time"
)

// A replica here that stops applying (it lost touch with its group's leader,
// say, or waits for a snapshot that does not come) must not stop this member
// from serving its range: reads and watches then go to a replica on another
// member, as for a range this member does not hold.

// lagAfter is how long a replica here may stay behind, applying nothing,
// before the watch stops waiting for it and reads its range elsewhere (a
// read gives it behindWait).
const lagAfter = 2 * time.Second

// lagTracker remembers, per range, the applied revision of its replica here
// while it is behind, and since when it has not moved.
type lagTracker struct {
	mu sync.Mutex
	m  map[uint64]lagState
}

type lagState struct {
	applied int64
	since   time.Time
}

// stuck reports whether range id's replica here, at applied (-1: none
// running yet), is behind last and has not moved for lagAfter.
func (t *lagTracker) stuck(id uint64, applied, last int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if applied >= last {
		delete(t.m, id)
		return false
	}
	if t.m == nil {
		t.m = map[uint64]lagState{}
	}
	now := time.Now()
	st, ok := t.m[id]
	if !ok || st.applied != applied {
		t.m[id] = lagState{applied: applied, since: now}
		return false
	}
	return now.Sub(st.since) >= lagAfter
}
