package router

import (
	"context"
	"errors"
	"io"
	"math"
	"net/url"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Forwarding: in a cluster, writes and lease requests run on the node that
// leads the oracle (the primary). Another node passes them on, over the
// primary's peer listener, where the same services are registered, and
// answers with the primary's response under its own member id. A request
// is forwarded at most once: a node that receives a forwarded request and
// is no longer the primary answers etcd's "not leader", which clients
// retry.

// forwardedKey marks a request forwarded by another member.
const forwardedKey = "mosaic-forwarded"

// leaderWait bounds how long a request waits for the oracle to have a
// leader before failing with etcd's "no leader".
const leaderWait = 5 * time.Second

// forwarder keeps one client connection per member's peer listener.
type forwarder struct {
	mu    sync.Mutex
	conns map[uint64]*grpc.ClientConn
	// info is other members' own entries (name, client URLs), as last
	// heard.
	info map[uint64]*pb.Member
}

// primary returns nil if this node runs the request itself, or a
// connection to the primary. ctx carries the request's metadata.
func (r *Router) primary(ctx context.Context) (*grpc.ClientConn, error) {
	if !r.node.cluster {
		return nil, nil
	}
	if r.isLearner() {
		return nil, rpctypes.ErrGRPCNotSupportedForLearner
	}
	deadline := time.Now().Add(leaderWait)
	for {
		v := r.node.oracle.View()
		if v.Leader {
			return nil, nil
		}
		if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
			return nil, rpctypes.ErrGRPCNotLeader
		}
		if v.Lead != 0 {
			conn, err := r.node.peerConn(v.Lead)
			if err != nil || conn.GetState() != connectivity.TransientFailure {
				return conn, err
			}
			// The primary is unreachable (most likely down): wait for the
			// election that replaces it.
			conn.Connect()
		}
		if time.Now().After(deadline) {
			return nil, rpctypes.ErrGRPCNoLeader
		}
		select {
		case <-ctx.Done():
			return nil, toGRPC(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (f *forwarder) conn(n *Node, id uint64) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.conns[id]; c != nil {
		return c, nil
	}
	var addr string
	for _, u := range n.peerURLs(id) {
		if pu, err := url.Parse(u); err == nil {
			addr = pu.Host
			break
		}
	}
	if addr == "" {
		return nil, rpctypes.ErrGRPCNoLeader
	}
	c, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A primary cut off is noticed without waiting for a reset (the
		// peer listener allows pings every 5s).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
		// A member cut off and back is reached again within seconds, as
		// the Raft transport reaches it: gRPC's defaults let one attempt
		// to connect, begun while it was cut off (its SYNs dropped), block
		// every call for up to 20s, and back off up to 2 minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)))
	if err != nil {
		return nil, err
	}
	if f.conns == nil {
		f.conns = map[uint64]*grpc.ClientConn{}
	}
	f.conns[id] = c
	return c, nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// outgoing marks ctx as forwarded.
func outgoing(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
}

// forward runs call on the primary if this node is not it (ok = true),
// and returns its response under this member's id. A call that could not
// reach the primary (it died, say) is tried again, on whichever node
// leads by then, for up to leaderWait: it was never sent.
func forward[T headered](r *Router, ctx context.Context, call func(context.Context, *grpc.ClientConn) (T, error)) (resp T, ok bool, err error) {
	deadline := time.Now().Add(leaderWait)
	for {
		conn, err := r.primary(ctx)
		if err != nil {
			return resp, true, err
		}
		if conn == nil {
			return resp, false, nil
		}
		resp, err = call(outgoing(ctx), conn)
		// Not sent, or refused by a member that is no longer the primary
		// (it ran nothing): try the current primary.
		if (notSent(err) || notLeaderErr(err)) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return resp, true, toGRPC(ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		resp, err = forwarded(r, resp, lostForward(err))
		return resp, true, err
	}
}

// lostForward turns a forwarded call that broke in transit (the primary
// died or the network between failed after the request left) into etcd's
// "request timed out": its outcome is unknown, and the client is owed an
// etcd error, not a connection error that is not about its own connection.
func lostForward(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := rpctypes.Error(err).(rpctypes.EtcdError); ok {
		return err
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		return rpctypes.ErrGRPCTimeout
	}
	return err
}

// notSent reports whether a call failed to reach the other node at all.
func notSent(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	m := st.Message()
	return strings.Contains(m, "Error while dialing") || strings.Contains(m, "connection refused")
}

// headered is every etcd response with a header.
type headered interface{ GetHeader() *pb.ResponseHeader }

// forwarded returns a forwarded call's response under this member's id.
func forwarded[T headered](r *Router, resp T, err error) (T, error) {
	if err != nil {
		return resp, err
	}
	if h := resp.GetHeader(); h != nil {
		h.MemberId = r.node.oracle.View().MemberID
	}
	return resp, nil
}

// forwardKeepAlive relays a LeaseKeepAlive stream to the primary until
// either side ends it.
func (r *Router) forwardKeepAlive(conn *grpc.ClientConn, stream grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	ctx, cancel := context.WithCancel(outgoing(stream.Context()))
	defer cancel()
	up, err := pb.NewLeaseClient(conn).LeaseKeepAlive(ctx)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					_ = up.CloseSend()
				}
				errc <- err
				return
			}
			if err := up.Send(req); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		for {
			resp, err := up.Recv()
			if err != nil {
				errc <- err
				return
			}
			if _, err := forwarded(r, resp, nil); err != nil {
				errc <- err
				return
			}
			if err := stream.Send(resp); err != nil {
				errc <- err
				return
			}
		}
	}()
	err = <-errc
	if errors.Is(err, io.EOF) {
		// The client closed its side: wait for the primary to finish.
		err = <-errc
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
	return err
}

// isLearner reports whether this member is a learner: as etcd's learners,
// it serves only serializable reads (and watches).
func (r *Router) isLearner() bool {
	v := r.node.oracle.View()
	m := findMember(v.Members, v.MemberID)
	return m != nil && m.Learner
}

// notLeaderErr reports etcd's "not leader", which a member answers to a
// forwarded request when it no longer runs the writes.
func notLeaderErr(err error) bool {
	return err != nil && rpctypes.Error(err) == rpctypes.ErrNotLeader
}
