package router

import (
	"bytes"
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/proto/rangepb"
	"github.com/mosaic-kv/mosaic/revision"
	"github.com/mosaic-kv/mosaic/router/kvrules"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// kvServer is etcd's KV service.
type kvServer struct {
	pb.UnimplementedKVServer
	r *Router
}

func (s *kvServer) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	return s.r.Range(ctx, req)
}

func (s *kvServer) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	if err := kvrules.CheckPut(req); err != nil {
		return nil, err
	}
	if err := kvrules.CheckRequestSize(req, s.r.maxRequestBytes); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.PutResponse, error) {
		return forwardWrite(s.r, ctx, c, rangepb.ForwardRequest_PUT, req, &pb.PutResponse{}, func() (*pb.PutResponse, error) {
			return pb.NewKVClient(c).Put(ctx, req)
		})
	}); ok {
		return resp, err
	}
	return s.r.Put(ctx, req)
}

func (s *kvServer) DeleteRange(ctx context.Context, req *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := kvrules.CheckDeleteRange(req); err != nil {
		return nil, err
	}
	if err := kvrules.CheckRequestSize(req, s.r.maxRequestBytes); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.DeleteRangeResponse, error) {
		return forwardWrite(s.r, ctx, c, rangepb.ForwardRequest_DELETE_RANGE, req, &pb.DeleteRangeResponse{}, func() (*pb.DeleteRangeResponse, error) {
			return pb.NewKVClient(c).DeleteRange(ctx, req)
		})
	}); ok {
		return resp, err
	}
	return s.r.DeleteRange(ctx, req)
}

func (s *kvServer) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := kvrules.CheckTxn(req, s.r.maxTxnOps); err != nil {
		return nil, err
	}
	if kvrules.IsTxnReadOnly(req) {
		return s.r.readTxn(ctx, req)
	}
	if err := kvrules.CheckRequestSize(req, s.r.maxRequestBytes); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.TxnResponse, error) {
		return forwardWrite(s.r, ctx, c, rangepb.ForwardRequest_TXN, req, &pb.TxnResponse{}, func() (*pb.TxnResponse, error) {
			return pb.NewKVClient(c).Txn(ctx, req)
		})
	}); ok {
		return resp, err
	}
	return s.r.Txn(ctx, req)
}

func (s *kvServer) Compact(ctx context.Context, req *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := kvrules.CheckCompaction(req); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(s.r, ctx, func(ctx context.Context, c *grpc.ClientConn) (*pb.CompactionResponse, error) {
		return pb.NewKVClient(c).Compact(ctx, req)
	}); ok {
		return resp, err
	}
	return s.r.Compact(ctx, req)
}

func (s *kvServer) RangeStream(req *pb.RangeRequest, stream grpc.ServerStreamingServer[pb.RangeStreamResponse]) error {
	return s.r.RangeStream(req, stream)
}

// readTxn serves a Txn whose ops are all Ranges at one read revision, as
// etcd serves it on its read path: compares and ranges see the same state.
func (r *Router) readTxn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	view, err := r.readView(ctx, false)
	if err != nil {
		return nil, err
	}
	compares := kvrules.TxnCompares(req)
	results := make([]bool, len(compares))
	for i, c := range compares {
		var parts []kvrules.ComparePart
		for _, d := range view.Ranges {
			sp, ok := clip(c.Key, c.RangeEnd, d)
			if !ok {
				continue
			}
			rq := &pb.RangeRequest{Key: sp.Key, RangeEnd: sp.End}
			part, err := r.readPart(ctx, d, sp, readOptions(rq), view.Rev, view)
			if err != nil {
				return nil, err
			}
			parts = append(parts, kvrules.EvalCompare(c, part.KVs))
		}
		results[i] = kvrules.CompareResult(c, parts)
	}
	plan, err := kvrules.TxnPlan(req, results)
	if err != nil {
		return nil, err
	}
	if err := plan.Check(kvrules.State{CurrentRev: view.Rev, CompactRev: view.CompactRev}); err != nil {
		return nil, err
	}
	return r.readOnlyPlan(ctx, plan, view)
}

// Compact records the compaction revision with the oracle (reads below it
// fail from then on) and removes old versions; with physical set, it
// answers only once they are gone.
func (r *Router) Compact(ctx context.Context, req *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	view := r.node.oracle.View()
	if err := kvrules.CheckCompactionState(req, kvrules.State{CurrentRev: view.Rev, CompactRev: view.CompactRev}); err != nil {
		return nil, err
	}
	if err := r.node.oracle.Compact(ctx, req.Revision); err != nil {
		return nil, toGRPC(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.node.store.Compact(context.Background(), req.Revision) }()
	if req.Physical {
		select {
		case err := <-done:
			if err != nil {
				return nil, err
			}
		case <-ctx.Done():
			return nil, toGRPC(ctx.Err())
		}
	}
	return &pb.CompactionResponse{Header: r.header(r.node.oracle.View().Rev)}, nil
}

// streamChunk is the number of keys per RangeStream message.
const streamChunk = 1000

// RangeStream sends a range in chunks read at one revision, so memory stays
// bounded by the chunk size. The last message carries the header, more and
// count, as etcd 3.7 sends them.
func (r *Router) RangeStream(req *pb.RangeRequest, stream grpc.ServerStreamingServer[pb.RangeStreamResponse]) error {
	if err := kvrules.CheckRange(req); err != nil {
		return err
	}
	if !kvrules.IsDefaultOrdering(req) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support custom sort orders")
	}
	if kvrules.HasRevisionFilters(req) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support revision filters")
	}
	ctx := stream.Context()
	view, err := r.readView(ctx, req.Serializable)
	if err != nil {
		return err
	}
	if err := kvrules.CheckRangeState(req, kvrules.State{CurrentRev: view.Rev, CompactRev: view.CompactRev}); err != nil {
		return err
	}
	q := proto.Clone(req).(*pb.RangeRequest)
	if q.Revision <= 0 {
		q.Revision = view.Rev
	}
	if q.CountOnly {
		resp, err := r.rangeAt(ctx, q, view)
		if err != nil {
			return err
		}
		return stream.Send(&pb.RangeStreamResponse{RangeResponse: &pb.RangeResponse{Header: r.header(view.Rev), Count: resp.Count}})
	}
	total := req.Limit
	var sent int64
	for {
		max := int64(streamChunk)
		if total > 0 && total-sent < max {
			max = total - sent
		}
		kvs, more, err := r.streamChunk(ctx, q, view, max)
		if err != nil {
			return err
		}
		sent += int64(len(kvs))
		done := !more || (total > 0 && sent >= total)
		out := &pb.RangeResponse{Kvs: kvs}
		var next []byte
		if len(kvs) > 0 {
			next = append(bytes.Clone(kvs[len(kvs)-1].Key), 0)
		}
		if done {
			out.Header = r.header(view.Rev)
			out.More = more
			out.Count = sent
			if more {
				// Stopped by the client's limit: count what is left once.
				rest, err := r.rangeAt(ctx, &pb.RangeRequest{Key: next, RangeEnd: q.RangeEnd, Revision: q.Revision, CountOnly: true}, view)
				if err != nil {
					return err
				}
				out.Count += rest.Count
			}
		}
		if err := stream.Send(&pb.RangeStreamResponse{RangeResponse: out}); err != nil {
			return err
		}
		if done {
			return nil
		}
		q.Key = next
	}
}

// streamChunk reads up to max keys of q's span from q.Key on, at
// q.Revision, in key order, without counting the rest of the span; more
// reports whether keys remain.
func (r *Router) streamChunk(ctx context.Context, q *pb.RangeRequest, view *revision.View, max int64) ([]*mvccpb.KeyValue, bool, error) {
	var kvs []*mvccpb.KeyValue
	for _, d := range view.Ranges {
		sp, ok := clip(q.Key, q.RangeEnd, d)
		if !ok {
			continue
		}
		part, err := r.readPart(ctx, d, sp, mvcc.ReadOptions{Limit: max + 1 - int64(len(kvs)), KeysOnly: q.KeysOnly, NoCount: true}, q.Revision, view)
		if err != nil {
			return nil, false, err
		}
		kvs = append(kvs, part.KVs...)
		if int64(len(kvs)) > max {
			return shapeKVs(q, kvs[:max]), true, nil
		}
	}
	return shapeKVs(q, kvs), false, nil
}

// shapeKVs applies etcd's per-KeyValue rules of a Range (keys_only drops
// values and leases) to keys read in default order.
func shapeKVs(q *pb.RangeRequest, kvs []*mvccpb.KeyValue) []*mvccpb.KeyValue {
	if !q.KeysOnly {
		return kvs
	}
	return kvrules.MergeRange(&pb.RangeRequest{KeysOnly: true}, []kvrules.RangePart{{KVs: kvs}}).Kvs
}
