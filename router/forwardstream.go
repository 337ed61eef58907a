package router

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mosaic-kv/mosaic/proto/rangepb"
)

// Forwarded writes (Put, DeleteRange, Txn) travel to the primary on one
// stream per primary connection (rangepb.Forwarder), many in flight at once
// and each answered by id: a unary call per write cost both members a new
// HTTP/2 stream with its headers and trailers, and under a 100-client put
// load a put sent to a member that is not the primary cost the members
// 10-15% more CPU than one sent to the primary.
//
// The outcome rules are the unary call's: a request that cannot be opened
// a stream for was not sent (the caller may try the next primary); once it
// is on a stream that breaks before its answer, its outcome is unknown
// (codes.Unavailable, which forward turns into etcd's "request timed out").
// A primary without the service (an older member) is asked by unary call.

// errNoForwarder: the primary does not serve the stream; nothing was run.
var errNoForwarder = errors.New("primary serves no forward stream")

// errStreamBroke answers the requests in flight on a stream that broke.
var errStreamBroke = status.Error(codes.Unavailable, "forward stream to the primary ended before its answer")

// fwdStreams keeps one forward stream per primary connection.
type fwdStreams struct {
	mu      sync.Mutex
	streams map[*grpc.ClientConn]*fwdStream
	closed  bool
}

// fwdStream is one open stream and the requests waiting on it.
type fwdStream struct {
	stream rangepb.Forwarder_ForwardClient
	cancel context.CancelFunc
	sendMu sync.Mutex // gRPC streams take one Send at a time

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *rangepb.ForwardReply
	err     error // once set, the stream is dead and every caller gets it
}

// get returns the live stream on conn, opening one if there is none. The
// stream is opened outside the lock: opening waits for the connection,
// which must not hold up streams to other members.
func (f *fwdStreams) get(conn *grpc.ClientConn) (*fwdStream, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, status.Error(codes.Unavailable, "router closed")
	}
	if s := f.streams[conn]; s != nil && s.alive() {
		f.mu.Unlock()
		return s, nil
	}
	f.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	st, err := rangepb.NewForwarderClient(conn).Forward(ctx)
	if err != nil {
		cancel()
		return nil, err // not sent: the caller may try again
	}
	s := &fwdStream{stream: st, cancel: cancel, pending: map[uint64]chan *rangepb.ForwardReply{}}

	f.mu.Lock()
	defer f.mu.Unlock()
	if other := f.streams[conn]; other != nil && other.alive() {
		cancel() // another caller opened one meanwhile
		return other, nil
	}
	if f.closed {
		cancel()
		return nil, status.Error(codes.Unavailable, "router closed")
	}
	if f.streams == nil {
		f.streams = map[*grpc.ClientConn]*fwdStream{}
	}
	f.streams[conn] = s
	go s.receive()
	return s, nil
}

func (f *fwdStreams) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for _, s := range f.streams {
		s.fail(errStreamBroke)
	}
	f.streams = nil
}

func (s *fwdStream) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err == nil
}

// fail ends the stream: every request waiting on it gets err.
func (s *fwdStream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err = err
	for id, ch := range s.pending {
		close(ch)
		delete(s.pending, id)
	}
	s.cancel()
}

// receive hands each answer to the request waiting for it.
func (s *fwdStream) receive() {
	for {
		rep, err := s.stream.Recv()
		if err != nil {
			if status.Code(err) == codes.Unimplemented {
				s.fail(errNoForwarder)
			} else {
				s.fail(errStreamBroke)
			}
			return
		}
		s.mu.Lock()
		ch := s.pending[rep.Id]
		delete(s.pending, rep.Id)
		s.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
}

// call sends req as method and fills resp with the answer; the primary's
// error comes back as the status it answered with.
func (s *fwdStream) call(ctx context.Context, method rangepb.ForwardRequest_Method, req, resp proto.Message) error {
	body, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	ch := make(chan *rangepb.ForwardReply, 1)
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return s.err
	}
	s.nextID++
	id := s.nextID
	s.pending[id] = ch
	s.mu.Unlock()

	fr := &rangepb.ForwardRequest{Id: id, Method: method, Body: body}
	if dl, ok := ctx.Deadline(); ok {
		fr.TimeoutNs = max(int64(time.Until(dl)), 1)
	}
	s.sendMu.Lock()
	err = s.stream.Send(fr)
	s.sendMu.Unlock()
	if err != nil {
		s.fail(errStreamBroke) // whether the primary got it is unknown
	}
	select {
	case rep, ok := <-ch:
		if !ok {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.err
		}
		if rep.Code != uint32(codes.OK) {
			return status.Error(codes.Code(rep.Code), rep.Message)
		}
		return proto.Unmarshal(rep.Body, resp)
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
		return status.FromContextError(ctx.Err()).Err()
	}
}

// forwardWrite runs a forwarded write on the primary at conn over its
// forward stream, or by unary call if the primary has no stream service.
func forwardWrite[T proto.Message](r *Router, ctx context.Context, conn *grpc.ClientConn, method rangepb.ForwardRequest_Method, req proto.Message, resp T, unary func() (T, error)) (T, error) {
	var zero T
	s, err := r.fwdStreams.get(conn)
	if err == nil {
		err = s.call(ctx, method, req, resp)
		if err == nil {
			return resp, nil
		}
	}
	if errors.Is(err, errNoForwarder) {
		return unary()
	}
	return zero, err
}

// forwardServer serves other members' forward streams on the peer
// listener: each request runs as the unary call it stands for, marked
// forwarded (a member that is no longer the primary answers "not leader").
type forwardServer struct {
	rangepb.UnimplementedForwarderServer
	kv *kvServer

	startWorkers sync.Once
	work         chan func()
}

// forwardWorkers run forwarded requests. They are kept, as the gRPC
// server's stream workers are (NumStreamWorkers): a fresh goroutine per
// request grew its stack down the write path every time (runtime.newstack
// took a tenth of the write path's CPU on the primary). They live as long
// as the process, as the peer listener does.
const forwardWorkers = 128

// run runs fn on a kept worker, or on a goroutine of its own if all are busy.
func (f *forwardServer) run(fn func()) {
	f.startWorkers.Do(func() {
		f.work = make(chan func())
		for range forwardWorkers {
			go func() {
				for fn := range f.work {
					fn()
				}
			}()
		}
	})
	select {
	case f.work <- fn:
	default:
		go fn()
	}
}

func (f *forwardServer) Forward(stream rangepb.Forwarder_ForwardServer) error {
	var sendMu sync.Mutex
	var running sync.WaitGroup
	defer running.Wait() // no Send after the handler returns
	base := metadata.NewIncomingContext(stream.Context(), metadata.Pairs(forwardedKey, "1"))
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		running.Add(1)
		f.run(func() {
			defer running.Done()
			rep := f.serve(base, req)
			sendMu.Lock()
			defer sendMu.Unlock()
			_ = stream.Send(rep) // a broken stream ends Recv too
		})
	}
}

// serve runs one forwarded request.
func (f *forwardServer) serve(ctx context.Context, req *rangepb.ForwardRequest) *rangepb.ForwardReply {
	if req.TimeoutNs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutNs))
		defer cancel()
	}
	var resp proto.Message
	var err error
	switch req.Method {
	case rangepb.ForwardRequest_PUT:
		in := &pb.PutRequest{}
		if err = proto.Unmarshal(req.Body, in); err == nil {
			resp, err = f.kv.Put(ctx, in)
		}
	case rangepb.ForwardRequest_DELETE_RANGE:
		in := &pb.DeleteRangeRequest{}
		if err = proto.Unmarshal(req.Body, in); err == nil {
			resp, err = f.kv.DeleteRange(ctx, in)
		}
	case rangepb.ForwardRequest_TXN:
		in := &pb.TxnRequest{}
		if err = proto.Unmarshal(req.Body, in); err == nil {
			resp, err = f.kv.Txn(ctx, in)
		}
	default:
		err = status.Errorf(codes.Unimplemented, "forward: unknown method %v", req.Method)
	}
	rep := &rangepb.ForwardReply{Id: req.Id}
	if err == nil {
		rep.Body, err = proto.Marshal(resp)
	}
	if err != nil {
		st := status.Convert(err)
		rep.Body, rep.Code, rep.Message = nil, uint32(st.Code()), st.Message()
	}
	return rep
}
