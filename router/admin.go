package router

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
	"github.com/mosaic-kv/mosaic/proto/raftcmdpb"
	"github.com/mosaic-kv/mosaic/shard/mvcc"
)

// adminServer is Mosaic's own Admin service, used by mosaicctl.
type adminServer struct {
	adminpb.UnimplementedAdminServer
	r *Router
}

func (s *adminServer) ListRanges(ctx context.Context, _ *adminpb.ListRangesRequest) (*adminpb.ListRangesResponse, error) {
	v := s.r.node.oracle.View()
	resp := &adminpb.ListRangesResponse{}
	for _, d := range v.Ranges {
		info, err := s.r.node.rangeInfo(d)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		resp.Ranges = append(resp.Ranges, info)
	}
	return resp, nil
}

func (s *adminServer) SplitRange(ctx context.Context, req *adminpb.SplitRangeRequest) (*adminpb.SplitRangeResponse, error) {
	if len(req.Key) == 0 {
		return nil, status.Error(codes.InvalidArgument, "split key must not be empty")
	}
	res, err := s.r.node.Split(ctx, req.Key)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	left, err := s.r.node.rangeInfo(res.Left)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	right, err := s.r.node.rangeInfo(res.Right)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &adminpb.SplitRangeResponse{Left: left, Right: right}, nil
}

// rangeInfo describes one range as this node sees it.
func (n *Node) rangeInfo(d *raftcmdpb.RangeDesc) (*adminpb.RangeInfo, error) {
	info := &adminpb.RangeInfo{Id: d.Id, Start: d.Start, End: d.End, Replicas: []uint64{n.nodeID}}
	if s := n.shard(d.Id); s != nil {
		info.AppliedIndex = s.AppliedIndex()
		info.AppliedRevision = s.AppliedRev()
		info.Leader = n.nodeID
	}
	err := n.store.View(func(r *mvcc.Reader) error {
		var err error
		info.Keys, info.SizeBytes, err = r.SpanStats(d.Start, d.End)
		return err
	})
	return info, err
}
