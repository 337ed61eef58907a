// Package watchactor serves etcd's Watch service: it turns the revisions
// the node has applied into revision-ordered watch streams, with etcd
// v3.7's semantics for every option (ranges, start revisions, prev_kv,
// filters, watch ids, cancel, progress, fragment, compaction).
//
// # Shape
//
// One hub goroutine owns every watcher of the node (hub.go); it is an
// actor in all but name — a mailbox (its inbox channel), state no one else
// touches, and no blocking: reads of the history run in goroutines and come
// back as messages, and queuing a response for a stream never waits. One
// exception to "no one else": a shard that has just applied may run the
// hub's fan-out of the new revisions itself, under the hub's mutex, when
// the hub is free and has few synced watchers (advanceInline) — so, as in
// etcd, a write's events are queued before its client is answered. Each
// Watch RPC has a receive goroutine that forwards requests to the hub and
// a sender goroutine that drains the stream's bounded queue into gRPC
// (stream.go). Plain goroutines are used instead of protoactor: the hub
// needs a select over its inbox and the source's Advanced channel, and no
// supervision — a failed stream just ends.
//
// # Events
//
// Events come only from the Source. The hub keeps a cursor: every event at
// or below it has been queued for every synced watcher. When the visible
// revision passes the cursor the hub takes the changes in (cursor, visible]
// over the bounding span of all watchers — from the Source's memory of its
// newest revisions (Recent, no read, no goroutine) when it has them, else
// with one read of the history in a goroutine — and hands each
// revision's events to the synced watchers through a span index (group.go):
// one response per watcher per revision, header revision = that revision,
// as etcd's synced watchers get them. A watcher whose start revision is in
// the past is unsynced: catch-up reads [minRev, readTo] serve up to 512
// such watchers at once, one response per watcher holding at most 1000
// revisions (etcd's batch), header = the end of the read; then it joins the
// synced group. Below the compact revision it gets etcd's compacted
// response (compact_revision set, canceled, header revision 0) and stays
// registered until canceled, as in etcd.
//
// # Slow clients
//
// A stream's queue holds at most 1024 responses or 4 MiB of events. When a
// synced watcher's response does not fit, the watcher becomes unsynced at
// that revision and holds no events: it is caught up from history once its
// stream has drained (better than etcd's victims, which keep the batch in
// memory). So a client that stops reading costs one bounded queue and
// never stalls writes (the hub does not sit in the write path at all) or
// other watchers.
//
// # Progress
//
// A progress notification claims that every event at or below its header
// revision has been sent, so it is always at the cursor and queued behind
// those events. progress_notify watchers get one per interval (jittered by
// up to 10%, elided after a response with events, only while synced —
// etcd's rules). A WatchProgressRequest is answered with watch id -1 once
// the cursor reaches the current revision of the moment it arrived (so the
// answer is at least as new as any revision a client read before asking —
// what Kubernetes' consistent reads wait for), and only if every watcher of
// the stream is synced then; otherwise it is dropped, as etcd drops it, and
// a stream without watchers gets nothing.
//
// # Invariants
//
//   - Each watcher sees events in revision order, every revision at or
//     after its start once, all events of a revision in one response
//     (unless it asked for fragment and the response exceeds the limit).
//   - A watcher's header revisions never decrease, and a progress
//     notification never precedes an event at or below its revision.
//   - Memory per stream is bounded by its queue; per watcher by a constant.
package watchactor
