package watchactor

import (
	"context"
	"errors"
	"io"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
)

// etcd's texts for refused watch creations (server/storage/mvcc and
// rpctypes), which clients turn back into errors.
var (
	errCompacted   = rpctypes.ErrCompacted.Error()
	errEmptyRange  = "mvcc: watcher range is empty"
	errDuplicateID = "mvcc: duplicate watch ID provided on the WatchStream"
)

// autoWatchID asks the server to choose the watch id (clientv3.AutoWatchID).
const autoWatchID = 0

// minProgressInterval is etcd's floor for --watch-progress-notify-interval.
const minProgressInterval = 100 * time.Millisecond

// Options configures a Server.
type Options struct {
	// ProgressNotifyInterval is --watch-progress-notify-interval: how
	// often a watcher created with progress_notify hears the current
	// revision when it had no events. Zero means etcd's default, 10
	// minutes; below 100ms it is raised to 100ms, as etcd does.
	ProgressNotifyInterval time.Duration
	// MaxRequestBytes is the size above which a response of a watcher
	// created with fragment is split (etcd's --max-request-bytes plus
	// its gRPC overhead allowance). Zero means 1.5 MiB + 512 KiB.
	MaxRequestBytes int
	// Header returns the response header at a revision (cluster and
	// member ids, Raft term). Nil gives headers with only the revision.
	Header func(rev int64) *pb.ResponseHeader
	// Logger logs; nil is silent.
	Logger *zap.Logger

	// Tuning, zero for the defaults; tests shrink them.
	maxQueued      int           // responses queued per stream
	maxQueuedBytes int           // event bytes queued per stream
	readLimit      int           // events per read of the history
	maxCatchup     int           // watchers per catch-up read
	maxBatchRevs   int           // revisions per catch-up response (etcd's watchBatchMaxRevs)
	resyncInterval time.Duration // retry of failed catch-ups
}

func (o *Options) defaults() {
	if o.ProgressNotifyInterval <= 0 {
		o.ProgressNotifyInterval = 10 * time.Minute
	}
	if o.ProgressNotifyInterval < minProgressInterval {
		o.ProgressNotifyInterval = minProgressInterval
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = 3*512*1024 + 512*1024
	}
	if o.Header == nil {
		o.Header = func(rev int64) *pb.ResponseHeader { return &pb.ResponseHeader{Revision: rev} }
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.maxQueued <= 0 {
		o.maxQueued = 1024
	}
	if o.maxQueuedBytes <= 0 {
		o.maxQueuedBytes = 4 << 20
	}
	if o.readLimit <= 0 {
		o.readLimit = 4096
	}
	if o.maxCatchup <= 0 {
		o.maxCatchup = 512
	}
	if o.maxBatchRevs <= 0 {
		o.maxBatchRevs = 1000
	}
	if o.resyncInterval <= 0 {
		o.resyncInterval = 100 * time.Millisecond
	}
}

// Server is etcd's Watch service over a Source.
type Server struct {
	pb.UnimplementedWatchServer
	src  Source
	opts Options
	lg   *zap.Logger
	hub  *hub
}

// NewServer starts the watch hub over src. Close stops it.
func NewServer(src Source, opts Options) *Server {
	opts.defaults()
	s := &Server{src: src, opts: opts, lg: opts.Logger}
	s.hub = newHub(s)
	src.OnAdvance(s.hub.advanceInline)
	go s.hub.run()
	return s
}

// Close stops the hub; streams still open end with their contexts.
func (s *Server) Close() {
	select {
	case <-s.hub.stopc:
	default:
		close(s.hub.stopc)
	}
	<-s.hub.donec
}

func (s *Server) header(rev int64) *pb.ResponseHeader { return s.opts.Header(rev) }

// Watch serves one stream until the client goes away. As etcd, a client
// that closes its sending side still receives events until it cancels.
func (s *Server) Watch(gs pb.Watch_WatchServer) error {
	st := newStream(s, gs)
	go st.sendLoop()
	errc := make(chan error, 1)
	go func() {
		if err := st.recvLoop(); err != nil {
			errc <- err
		}
	}()
	var err error
	select {
	case err = <-errc:
	case <-gs.Context().Done():
		err = gs.Context().Err()
	}
	if errors.Is(err, context.Canceled) {
		err = rpctypes.ErrGRPCWatchCanceled
	}
	done := make(chan struct{})
	if s.hub.tell(context.Background(), &closeMsg{st: st, done: done}) {
		<-done
	}
	close(st.stopc)
	<-st.donec
	return err
}

func (st *stream) recvLoop() error {
	h := st.srv.hub
	for {
		req, err := st.gs.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var m any
		switch u := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if u.CreateRequest == nil {
				continue
			}
			m = &createMsg{st: st, req: u.CreateRequest}
		case *pb.WatchRequest_CancelRequest:
			if u.CancelRequest == nil {
				continue
			}
			m = &cancelMsg{st: st, id: u.CancelRequest.WatchId}
		case *pb.WatchRequest_ProgressRequest:
			if u.ProgressRequest == nil {
				continue
			}
			if !h.tell(st.ctx, &progressMsg{st: st}) {
				return nil
			}
			continue
		default:
			st.srv.lg.Info("invalid watch request type received", zap.Any("request", req))
			continue
		}
		select {
		case st.tokens <- struct{}{}:
		case <-st.ctx.Done():
			return nil
		}
		if !h.tell(st.ctx, m) {
			return nil
		}
	}
}
