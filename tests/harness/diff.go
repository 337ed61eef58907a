package harness

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
)

// Op is one operation of a differential test, run once against each server's client. It
// returns a response (a proto message, a clientv3 response type, or any other comparable
// value) and an error.
type Op func(ctx context.Context, c *clientv3.Client) (any, error)

// OpTimeout bounds every Op.
const OpTimeout = 20 * time.Second

// Diff runs operations against a reference and a subject and reports every difference as
// a test error. Operations run one at a time, on the reference first, so both servers see
// the same history; that is what lets revisions be compared.
type Diff struct {
	t      testing.TB
	Ref    Server
	Subj   Server
	checks int
}

// NewDiff compares subj with ref.
func NewDiff(t testing.TB, ref, subj Server) *Diff {
	return &Diff{t: t, Ref: ref, Subj: subj}
}

// StartPair starts the reference (embedded etcd) and the subject (StartSubject) and returns
// a Diff over them, and the subject's process handle for restarts and range splits.
func StartPair(t testing.TB) (*Diff, *Process) {
	t.Helper()
	ref := StartEtcd(t)
	subj := StartSubject(t, Options{})
	d := NewDiff(t, ref, subj)
	t.Cleanup(func() { t.Logf("%d differential checks", d.Checks()) })
	return d, subj
}

// Checks is the number of operations compared so far.
func (d *Diff) Checks() int { return d.checks }

// T returns the test the Diff reports to.
func (d *Diff) T() testing.TB { return d.t }

// Outcome is what an Op returned on one server, normalised.
type Outcome struct {
	Resp any // a proto.Message for protobuf responses
	Err  error
}

// Check runs op against the reference and then the subject, normalises both responses
// (Normalize) and reports as a test error any difference between them, or between their
// errors' gRPC codes and messages. opts are extra cmp options for this comparison. It
// returns the reference's outcome, so the test can also check that etcd did what the test
// meant it to do.
func (d *Diff) Check(name string, op Op, opts ...cmp.Option) Outcome {
	d.t.Helper()
	d.checks++
	ref := Run(d.Ref, op)
	subj := Run(d.Subj, op)
	if msg := CompareOutcomes(ref, subj, opts...); msg != "" {
		d.t.Errorf("%s: %s (-%s +%s):\n%s", name, "responses differ", d.Ref.Name(), d.Subj.Name(), msg)
	}
	return ref
}

// Run runs op against s alone and returns its normalised outcome, for tests that compare
// outcomes themselves (CompareOutcomes).
func Run(s Server, op Op) Outcome {
	ctx, cancel := context.WithTimeout(context.Background(), OpTimeout)
	defer cancel()
	resp, err := op(ctx, s.Client())
	if err != nil {
		return Outcome{Err: err}
	}
	return Outcome{Resp: normalized(resp)}
}

// CompareOutcomes returns "" if a and b are the same, or a readable description of their
// difference (a cmp diff of a to b).
func CompareOutcomes(a, b Outcome, opts ...cmp.Option) string {
	switch {
	case a.Err != nil && b.Err != nil:
		ac, am := ErrorCode(a.Err)
		bc, bm := ErrorCode(b.Err)
		if ac != bc || am != bm {
			return fmt.Sprintf("errors differ:\n-\tcode=%s message=%q\n+\tcode=%s message=%q", ac, am, bc, bm)
		}
		return ""
	case a.Err != nil:
		return fmt.Sprintf("-\terror %s\n+\tsuccess %s", describeErr(a.Err), describe(b.Resp))
	case b.Err != nil:
		return fmt.Sprintf("-\tsuccess %s\n+\terror %s", describe(a.Resp), describeErr(b.Err))
	}
	return cmp.Diff(a.Resp, b.Resp, append([]cmp.Option{protocmp.Transform()}, opts...)...)
}

func describe(v any) string {
	if m, ok := v.(proto.Message); ok {
		return fmt.Sprintf("%T %v", m, m)
	}
	return fmt.Sprintf("%#v", v)
}

func describeErr(err error) string {
	c, m := ErrorCode(err)
	return fmt.Sprintf("code=%s message=%q", c, m)
}

// ErrorCode returns the gRPC code and message of err, which may be a gRPC status error or a
// clientv3 (rpctypes.EtcdError) error. Other errors are codes.Unknown with their text.
func ErrorCode(err error) (codes.Code, string) {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code(), ee.Error()
	}
	if s, ok := status.FromError(err); ok {
		return s.Code(), s.Message()
	}
	return codes.Unknown, err.Error()
}

// SameError reports whether err has the gRPC code and message of want (an rpctypes
// ErrGRPC* value or clientv3 Err* value).
func SameError(err, want error) bool {
	if err == nil || want == nil {
		return err == want
	}
	ec, em := ErrorCode(err)
	wc, wm := ErrorCode(want)
	return ec == wc && em == wm
}

// WantErr reports a test error unless the outcome is the error want (compared by gRPC code
// and message).
func (o Outcome) WantErr(t testing.TB, want error) {
	t.Helper()
	if !SameError(o.Err, want) {
		if o.Err == nil {
			t.Errorf("reference succeeded (%s), want error %s", describe(o.Resp), describeErr(want))
			return
		}
		t.Errorf("reference error %s, want %s", describeErr(o.Err), describeErr(want))
	}
}

// WantOK reports a test error if the outcome is an error.
func (o Outcome) WantOK(t testing.TB) {
	t.Helper()
	if o.Err != nil {
		t.Errorf("reference failed: %s", describeErr(o.Err))
	}
}

// normalized converts clientv3 response types to their protobuf messages and returns a
// normalised copy of protobuf messages; other values are returned as they are.
func normalized(v any) any {
	var m proto.Message
	switch r := v.(type) {
	case *clientv3.PutResponse:
		m = (*pb.PutResponse)(r)
	case *clientv3.GetResponse:
		m = (*pb.RangeResponse)(r)
	case *clientv3.DeleteResponse:
		m = (*pb.DeleteRangeResponse)(r)
	case *clientv3.TxnResponse:
		m = (*pb.TxnResponse)(r)
	case *clientv3.CompactResponse:
		m = (*pb.CompactionResponse)(r)
	case *clientv3.StatusResponse:
		m = (*pb.StatusResponse)(r)
	case *clientv3.MemberListResponse:
		m = (*pb.MemberListResponse)(r)
	case clientv3.OpResponse:
		switch {
		case r.Put() != nil:
			m = (*pb.PutResponse)(r.Put())
		case r.Get() != nil:
			m = (*pb.RangeResponse)(r.Get())
		case r.Del() != nil:
			m = (*pb.DeleteRangeResponse)(r.Del())
		case r.Txn() != nil:
			m = (*pb.TxnResponse)(r.Txn())
		}
	case proto.Message:
		m = r
	default:
		return v
	}
	if m == nil {
		return nil
	}
	m = proto.Clone(m)
	Normalize(m)
	return m
}

// Normalize clears, in every ResponseHeader inside m, the fields that identify a cluster,
// a member or a Raft term, which legitimately differ between two servers. The revision is
// kept: it must be the same for the same history.
func Normalize(m proto.Message) {
	normalize(m.ProtoReflect())
}

func normalize(m protoreflect.Message) {
	if m.Descriptor().FullName() == "etcdserverpb.ResponseHeader" {
		fields := m.Descriptor().Fields()
		for _, name := range []protoreflect.Name{"cluster_id", "member_id", "raft_term"} {
			m.Clear(fields.ByName(name))
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					normalize(mv.Message())
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := range l.Len() {
					normalize(l.Get(i).Message())
				}
			}
		case fd.Message() != nil:
			normalize(v.Message())
		}
		return true
	})
}
