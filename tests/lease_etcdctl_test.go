package tests

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

var (
	grantedLine   = regexp.MustCompile(`lease ([0-9a-f]{16}) granted with TTL`)
	remainingText = regexp.MustCompile(`remaining\((-?\d+)s\)|"ttl":(-?\d+)`)
	attachedKeys  = regexp.MustCompile(`attached keys\(\[([^\]]*)\]\)`)
)

// leaseText normalises etcdctl lease output: the lease ids this server generated become
// GEN1, GEN2, ..., attached keys are sorted (etcd lists them in map order), and remaining TTLs are
// returned separately (they are compared within a second) and replaced by N.
func leaseText(s string, generated []string, norm func(string) string) (string, []int64) {
	for i, g := range generated {
		s = strings.ReplaceAll(s, g, "GEN"+strconv.Itoa(i+1))
	}
	s = attachedKeys.ReplaceAllStringFunc(s, func(m string) string {
		keys := strings.Fields(attachedKeys.FindStringSubmatch(m)[1])
		sort.Strings(keys)
		return "attached keys([" + strings.Join(keys, " ") + "])"
	})
	var ttls []int64
	s = remainingText.ReplaceAllStringFunc(s, func(m string) string {
		sub := remainingText.FindStringSubmatch(m)
		n, _ := strconv.ParseInt(sub[1]+sub[2], 10, 64)
		ttls = append(ttls, n)
		if sub[1] != "" {
			return "remaining(Ns)"
		}
		return `"ttl":N`
	})
	// Lease ids other than GENn are chosen by the test and kept; only member and cluster ids
	// are normalised, and only in JSON.
	s = regexp.MustCompile(`"(cluster_id|member_id|raft_term)":\d+`).ReplaceAllString(s, `"$1":N`)
	s = regexp.MustCompile(`(?m)^\{"level":.*\n`).ReplaceAllString(s, "")
	return norm(s), ttls
}

// TestLeaseEtcdctl runs etcdctl's lease commands against both servers: grant, keep-alive
// (--once, and streaming until the lease is revoked), revoke, timetolive (--keys, JSON) and
// list, and compares their output, exit status and stderr.
func TestLeaseEtcdctl(t *testing.T) {
	t.Parallel()
	harness.BuildEtcdctl(t)
	d, _ := harness.StartPair(t)
	generated := map[string][]string{} // server endpoint -> the ids it generated
	idNorm := func(s string) string { return s }

	run := func(name string, args ...string) {
		t.Helper()
		type out struct {
			stdout string
			ttls   []int64
			stderr string
			err    error
		}
		var outs [2]out
		for i, s := range []harness.Server{d.Ref, d.Subj} {
			sargs := append([]string(nil), args...)
			for j, a := range sargs {
				if n, ok := strings.CutPrefix(a, "GEN"); ok {
					k, _ := strconv.Atoi(n)
					sargs[j] = generated[s.Endpoint()][k-1]
				}
			}
			stdout, stderr, err := harness.Etcdctl(t, s.Endpoint(), sargs...)
			if m := grantedLine.FindStringSubmatch(stdout); m != nil && args[1] == "grant" {
				generated[s.Endpoint()] = append(generated[s.Endpoint()], m[1])
			}
			o := out{stderr: stderr, err: err}
			o.stdout, o.ttls = leaseText(stdout, generated[s.Endpoint()], idNorm)
			o.stderr, _ = leaseText(stderr, generated[s.Endpoint()], idNorm)
			outs[i] = o
		}
		r, s := outs[0], outs[1]
		label := "etcdctl " + strings.Join(args, " ")
		if name != "" {
			label = name + ": " + label
		}
		if (r.err == nil) != (s.err == nil) {
			t.Errorf("%s: exit %v on %s, %v on %s", label, r.err, d.Ref.Name(), s.err, d.Subj.Name())
		}
		t.Logf("%s:\n%s%s", label, r.stdout, r.stderr)
		compareText(t, label+" stdout", r.stdout, s.stdout, d)
		compareText(t, label+" stderr", r.stderr, s.stderr, d)
		if len(r.ttls) != len(s.ttls) {
			t.Errorf("%s: remaining TTLs %v on %s, %v on %s", label, r.ttls, d.Ref.Name(), s.ttls, d.Subj.Name())
			return
		}
		for i := range r.ttls {
			if diff := r.ttls[i] - s.ttls[i]; diff > 1 || diff < -1 {
				t.Errorf("%s: remaining TTL %d on %s, %d on %s: more than 1s apart", label, r.ttls[i], d.Ref.Name(), s.ttls[i], d.Subj.Name())
			}
		}
	}

	run("", "lease", "grant", "60")
	run("minimum TTL", "lease", "grant", "1")
	run("too large", "lease", "grant", "9000000001")
	run("bad TTL", "lease", "grant", "x")
	run("", "lease", "revoke", "GEN2")
	run("", "lease", "keep-alive", "--once", "GEN1")
	run("", "lease", "timetolive", "GEN1")
	// Chosen ids through the client, keys on them.
	grant(t, d, 0x100, 60)
	grant(t, d, 0x200, 30)
	putLease(t, d, "k1", "v", 0x100)
	putLease(t, d, "k2", "v", 0x100)
	putLease(t, d, "k3", "v", 0x200)
	run("", "lease", "timetolive", "100")
	run("", "lease", "timetolive", "100", "--keys")
	run("", "lease", "timetolive", "200", "--keys", "-w", "json")
	run("", "lease", "timetolive", "999", "--keys")
	run("", "lease", "keep-alive", "--once", "100")
	run("", "lease", "keep-alive", "--once", "999")
	run("", "lease", "keep-alive", "--once", "-w", "json", "200")
	run("", "lease", "list")
	run("", "lease", "revoke", "200")
	run("", "lease", "revoke", "200")
	run("", "get", "k", "--prefix")
	run("", "lease", "list")

	// Streaming keep-alive: a 3s lease is renewed every second until it is revoked, then
	// etcdctl reports it gone and exits.
	grant(t, d, 0x300, 3)
	etcdctl := harness.BuildEtcdctl(t)
	type stream struct {
		cmd *exec.Cmd
		out bytes.Buffer
	}
	var streams [2]*stream
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, s := range []harness.Server{d.Ref, d.Subj} {
		st := &stream{cmd: exec.CommandContext(ctx, etcdctl, "--endpoints", s.Endpoint(), "lease", "keep-alive", "300")}
		st.cmd.Stdout = &st.out
		if err := st.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		streams[i] = st
	}
	time.Sleep(2500 * time.Millisecond)
	revoke(t, d, 0x300)
	for i, st := range streams {
		if err := st.cmd.Wait(); err != nil {
			t.Errorf("etcdctl lease keep-alive on server %d: %v", i, err)
		}
	}
	var texts [2]string
	for i, st := range streams {
		lines := strings.Split(strings.TrimSpace(st.out.String()), "\n")
		n := 0
		var kept []string
		for _, l := range lines {
			if l == "lease 0000000000000300 keepalived with TTL(3)" {
				n++
				if n > 1 {
					continue
				}
			}
			kept = append(kept, l)
		}
		if n < 2 {
			t.Errorf("streaming keep-alive on server %d: %d renewals in 2.5s, want ≥ 2:\n%s", i, n, st.out.String())
		}
		texts[i] = strings.Join(kept, "\n")
	}
	compareText(t, "etcdctl lease keep-alive 300 (repeated renewals collapsed)", texts[0], texts[1], d)
	if want := "lease 0000000000000300 keepalived with TTL(3)\nlease 0000000000000300 expired or revoked."; texts[0] != want {
		t.Errorf("etcd's streaming keep-alive printed %q, want %q", texts[0], want)
	}
	run("", "lease", "revoke", "GEN1")
	run("", "lease", "list")
	d.Check("final state", rangeOp(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})).WantOK(t)
}
