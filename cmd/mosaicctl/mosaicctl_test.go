package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
)

// fakeAdmin serves a fixed range table and records split keys.
type fakeAdmin struct {
	adminpb.UnimplementedAdminServer
	ranges []*adminpb.RangeInfo

	mu     sync.Mutex
	splits [][]byte
}

func (f *fakeAdmin) ListRanges(context.Context, *adminpb.ListRangesRequest) (*adminpb.ListRangesResponse, error) {
	return &adminpb.ListRangesResponse{Ranges: f.ranges}, nil
}

func (f *fakeAdmin) SplitRange(_ context.Context, req *adminpb.SplitRangeRequest) (*adminpb.SplitRangeResponse, error) {
	f.mu.Lock()
	f.splits = append(f.splits, req.GetKey())
	f.mu.Unlock()
	if string(req.GetKey()) == "/bad" {
		return nil, status.Error(codes.FailedPrecondition, "key is a range start")
	}
	return &adminpb.SplitRangeResponse{
		Left:  &adminpb.RangeInfo{Id: 1, Start: nil, End: req.GetKey(), Keys: 10, Leader: 1, Replicas: []uint64{1}},
		Right: &adminpb.RangeInfo{Id: 7, Start: req.GetKey(), End: nil, Keys: 5, Leader: 1, Replicas: []uint64{1}},
	}, nil
}

var testRanges = []*adminpb.RangeInfo{
	{Id: 1, Start: nil, End: []byte("/registry/pods"), Keys: 1200, SizeBytes: 3 << 20, AppliedIndex: 4567, Leader: 0xa1, Replicas: []uint64{0xa1, 0xb2, 0xc3}, Learners: []uint64{0xd4, 0xe5}, AppliedRevision: 99, Quiescent: true},
	{Id: 2, Start: []byte("/registry/pods"), End: []byte("a b"), Keys: 3, SizeBytes: 512, AppliedIndex: 12, Leader: 0xb2, Replicas: []uint64{0xa1, 0xb2}, AppliedRevision: 98},
	{Id: 3, Start: []byte("a b"), End: []byte{0xff, 0x00}, Keys: 0, SizeBytes: 0, AppliedIndex: 1},
	{Id: 4, Start: []byte{0xff, 0x00}, End: nil, Keys: 1, SizeBytes: 1536, AppliedIndex: 2, Leader: 0xc3, Replicas: []uint64{0xc3}},
}

// startFake serves fake on a loopback port and returns its address.
func startFake(t *testing.T, fake *fakeAdmin) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	adminpb.RegisterAdminServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRangeListTable(t *testing.T) {
	addr := startFake(t, &fakeAdmin{ranges: testRanges})
	for _, ep := range []string{addr, "http://" + addr, closedAddr(t) + "," + addr} {
		t.Run(ep, func(t *testing.T) {
			code, out, errOut := runCLI("--endpoints", ep, "range", "list")
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			want := strings.Join([]string{
				`ID  START           END             KEYS  SIZE     APPLIED-INDEX  LEADER  REPLICAS  LEARNERS`,
				`1   ""              /registry/pods  1200  3.0 MiB  4567           a1      a1,b2,c3  d4,e5`,
				`2   /registry/pods  "a b"           3     512 B    12             b2      a1,b2     `,
				`3   "a b"           "\xff\x00"      0     0 B      1              -                 `,
				`4   "\xff\x00"      ""              1     1.5 KiB  2              c3      c3        `,
			}, "\n") + "\n"
			if out != want {
				t.Errorf("table:\n%s\nwant:\n%s", out, want)
			}
		})
	}
}

func TestRangeListJSON(t *testing.T) {
	addr := startFake(t, &fakeAdmin{ranges: testRanges})
	// Flags may follow the command words.
	code, out, errOut := runCLI("range", "list", "--endpoints="+addr, "--json")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(got) != 4 {
		t.Fatalf("got %d ranges, want 4", len(got))
	}
	first := map[string]any{
		"id": 1.0, "start": "", "end": "/registry/pods", "keys": 1200.0, "size_bytes": float64(3 << 20),
		"applied_index": 4567.0, "applied_revision": 99.0, "leader": 161.0, "replicas": []any{161.0, 178.0, 195.0},
		"learners": []any{212.0, 229.0}, "quiescent": true,
	}
	if !reflect.DeepEqual(got[0], first) {
		t.Errorf("first range = %v, want %v", got[0], first)
	}
	if got[1]["end"] != "a b" || got[2]["replicas"] == nil || got[1]["quiescent"] != false {
		t.Errorf("second/third range = %v / %v", got[1], got[2])
	}
	// A key that is not UTF-8 comes quoted in "end" and exact in "end_base64".
	if got[2]["end"] != `"\xff\x00"` || got[2]["end_base64"] != "/wA=" || got[3]["start_base64"] != "/wA=" || got[3]["end"] != "" {
		t.Errorf("binary keys: %v / %v", got[2], got[3])
	}
	if _, ok := got[0]["start_base64"]; ok {
		t.Errorf("start_base64 present for a text key: %v", got[0])
	}
}

func TestRangeSplit(t *testing.T) {
	fake := &fakeAdmin{}
	addr := startFake(t, fake)

	code, out, errOut := runCLI("--endpoints", addr, "range", "split", "/registry/m")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	want := "ID  START        END          KEYS  SIZE  APPLIED-INDEX  LEADER  REPLICAS  LEARNERS\n" +
		"1   \"\"           /registry/m  10    0 B   0              1       1         \n" +
		"7   /registry/m  \"\"           5     0 B   0              1       1         \n"
	if out != want {
		t.Errorf("split table:\n%s\nwant:\n%s", out, want)
	}

	code, out, errOut = runCLI("--endpoints", addr, "--json", "range", "split", "--", "-dash")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var got struct{ Left, Right map[string]any }
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if got.Left["end"] != "-dash" || got.Right["start"] != "-dash" || got.Right["id"] != 7.0 || got.Right["end"] != "" {
		t.Errorf("split JSON = %+v", got)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.splits) != 2 || string(fake.splits[0]) != "/registry/m" || string(fake.splits[1]) != "-dash" {
		t.Errorf("server saw splits %q", fake.splits)
	}
}

func TestErrors(t *testing.T) {
	addr := startFake(t, &fakeAdmin{})
	dead := closedAddr(t)
	tests := []struct {
		args       []string
		wantStderr []string
	}{
		{[]string{"--endpoints", addr}, []string{"Error: no command given\n", "Usage: mosaicctl"}},
		{[]string{"--endpoints", addr, "nodes"}, []string{`unknown command "nodes"`}},
		{[]string{"--endpoints", addr, "node", "show"}, []string{"node takes one subcommand: list"}},
		{[]string{"--endpoints", addr, "range", "transfer-leader", "1"}, []string{"range transfer-leader needs --to NODE"}},
		{[]string{"--endpoints", addr, "range", "transfer-leader", "x", "--to", "a1"}, []string{`bad range ID "x"`}},
		{[]string{"--endpoints", addr, "range"}, []string{"range needs a subcommand"}},
		{[]string{"--endpoints", addr, "range", "merge"}, []string{`unknown range subcommand "merge"`}},
		{[]string{"--endpoints", addr, "range", "split"}, []string{"range split takes exactly one KEY"}},
		{[]string{"--endpoints", addr, "range", "split", "a", "b"}, []string{"range split takes exactly one KEY"}},
		{[]string{"--endpoints", addr, "range", "list", "x"}, []string{"range list takes no arguments"}},
		{[]string{"--bogus", "range", "list"}, []string{"flag provided but not defined: -bogus"}},
		{[]string{"--endpoints", "", "range", "list"}, []string{"--endpoints is empty"}},
		{[]string{"--endpoints", "nohost", "range", "list"}, []string{`endpoint "nohost" must be host:port or http://host:port`}},
		{[]string{"--endpoints", "https://" + addr, "range", "list"}, []string{"TLS is not supported"}},
		{[]string{"--endpoints", "ftp://" + addr, "range", "list"}, []string{"scheme must be http"}},
		{[]string{"--endpoints", dead, "--dial-timeout", "200ms", "range", "list"}, []string{"cannot connect to " + dead + " within 200ms"}},
		{[]string{"--endpoints", addr, "range", "split", "/bad"}, []string{"Error: FailedPrecondition: key is a range start"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			start := time.Now()
			code, out, errOut := runCLI(tt.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr = %q, want it to contain %q", errOut, w)
				}
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}
}

func TestUnimplementedServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer() // no Admin service: a node that does not serve it yet
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	code, _, errOut := runCLI("--endpoints", lis.Addr().String(), "range", "list")
	if code != 1 || !strings.Contains(errOut, "Error: Unimplemented: unknown service mosaic.admin.Admin") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		code, out, _ := runCLI(arg)
		if code != 0 || !strings.Contains(out, "range split KEY") {
			t.Errorf("%s: exit %d, stdout %q", arg, code, out)
		}
	}
}

func TestDisplayKey(t *testing.T) {
	tests := map[string]string{
		"":            `""`,
		"/registry/a": "/registry/a",
		"naïve":       "naïve",
		"a b":         `"a b"`,
		"tab\there":   `"tab\there"`,
		"\x00":        `"\x00"`,
		"\xff":        `"\xff"`,
		`"quoted"`:    `"\"quoted\""`,
	}
	for in, want := range tests {
		if got := displayKey([]byte(in)); got != want {
			t.Errorf("displayKey(%q) = %s, want %s", in, got, want)
		}
	}
}
