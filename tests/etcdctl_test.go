package tests

import (
	"regexp"
	"strings"
	"testing"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// etcdctlNormalizer rewrites what legitimately differs between two servers' etcdctl output:
// endpoints and other URLs, member and cluster ids, Raft terms and indexes, durations, sizes,
// patch versions, table column widths, and the client's own JSON log lines on stderr.
func etcdctlNormalizer(endpoint string) func(string) string {
	hostPort := strings.TrimPrefix(endpoint, "http://")
	rules := []struct {
		re   *regexp.Regexp
		repl string
	}{
		{regexp.MustCompile(`(?m)^\{"level":.*\n`), ``},
		{regexp.MustCompile(`"(cluster_id|member_id|raft_term|leader|ID|raftTerm|dbSize|dbSizeInUse|dbSizeQuota|raftIndex|raftAppliedIndex)":\d+`), `"$1":N`},
		{regexp.MustCompile(`took = \S+`), `took = DURATION`},
		{regexp.MustCompile(`"took":"[^"]*"`), `"took":"DURATION"`},
		{regexp.MustCompile(`http://127\.0\.0\.1:\d+`), `URL`},
		{regexp.MustCompile(`\b[0-9a-f]{14,16}\b`), `ID`},
		{regexp.MustCompile(`\b\d+(\.\d+)? (kB|MB|GB|B)\b`), `SIZE`},
		{regexp.MustCompile(`\b\d+%`), `PERCENT`},
		{regexp.MustCompile(`\b(\d+)\.(\d+)\.\d+\b`), `$1.$2.x`},
		{regexp.MustCompile(`"(ClusterID|MemberID|RaftTerm)" : \d+`), `"$1" : N`},
		{regexp.MustCompile(`│ *\d+ *│`), `│ N │`}, // raft term and index cells of tables
		{regexp.MustCompile(`│ *\d+ *│`), `│ N │`}, // (again: adjacent cells share a border)
		{regexp.MustCompile(`─+`), `─`},
		{regexp.MustCompile(` +`), ` `},
	}
	return func(s string) string {
		s = strings.ReplaceAll(s, endpoint, "ENDPOINT")
		s = strings.ReplaceAll(s, hostPort, "ENDPOINT")
		for _, r := range rules {
			s = r.re.ReplaceAllString(s, r.repl)
		}
		return s
	}
}

// etcdctlCase is one etcdctl invocation; stdin feeds `txn`.
type etcdctlCase struct {
	args  []string
	stdin string
}

// TestEtcdctl runs the same etcdctl commands against both servers and compares stdout,
// stderr and exit status after normalisation.
func TestEtcdctl(t *testing.T) {
	t.Parallel()
	harness.BuildEtcdctl(t)
	d, _ := harness.StartPair(t)
	txnScript := "value(\"k1\") = \"v1\"\nversion(\"k2\") = \"0\"\n\nput k2 from-txn\nget k --prefix\n\ndel k1\n\n"
	txnFail := "mod(\"k1\") > \"1000\"\n\nput never x\n\nget k1\nput k3 failure-branch\n\n"
	cases := []etcdctlCase{
		{args: []string{"put", "k1", "v1"}},
		{args: []string{"put", "k1", "v2", "--prev-kv"}},
		{args: []string{"put", "k1", "v1", "-w", "json"}},
		{args: []string{"put", "k2", "--ignore-value"}},
		{args: []string{"put", "", "v"}},
		{args: []string{"get", "k1"}},
		{args: []string{"get", "k1", "-w", "json"}},
		{args: []string{"get", "k1", "-w", "fields"}},
		{args: []string{"get", "k1", "-w", "simple"}},
		{args: []string{"get", "k", "--prefix"}},
		{args: []string{"get", "", "--from-key"}},
		{args: []string{"get", "k1", "--rev", "2"}},
		{args: []string{"get", "k1", "--rev", "99"}},
		{args: []string{"get", "k", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND"}},
		{args: []string{"get", "k", "--prefix", "--keys-only"}},
		{args: []string{"get", "k", "--prefix", "--count-only", "-w", "fields"}},
		{args: []string{"get", "k", "--prefix", "--limit", "1", "-w", "json"}},
		{args: []string{"get", "k", "--prefix", "--print-value-only"}},
		{args: []string{"txn"}, stdin: txnScript},
		{args: []string{"txn", "-w", "json"}, stdin: txnFail},
		{args: []string{"txn", "-i"}, stdin: txnScript},
		{args: []string{"put", "d1", "x"}},
		{args: []string{"put", "d2", "y"}},
		{args: []string{"del", "d1"}},
		{args: []string{"del", "d1"}},
		{args: []string{"del", "d", "--prefix", "--prev-kv"}},
		{args: []string{"del", "k", "--from-key", "-w", "json"}},
		{args: []string{"compaction", "3"}},
		{args: []string{"compaction", "3"}},
		{args: []string{"compaction", "--physical", "5"}},
		{args: []string{"compaction", "1000"}},
		{args: []string{"get", "k1", "--rev", "2"}},
		{args: []string{"endpoint", "health"}},
		{args: []string{"endpoint", "health", "-w", "json"}},
		{args: []string{"endpoint", "status", "-w", "table"}},
		{args: []string{"endpoint", "status", "-w", "json"}},
		{args: []string{"member", "list"}},
		{args: []string{"member", "list", "-w", "table"}},
		{args: []string{"member", "list", "-w", "json"}},
		{args: []string{"get", "", "--from-key", "-w", "json"}},
	}
	refNorm, subjNorm := etcdctlNormalizer(d.Ref.Endpoint()), etcdctlNormalizer(d.Subj.Endpoint())
	for _, c := range cases {
		rOut, rErr, rExit := harness.EtcdctlStdin(t, c.stdin, d.Ref.Endpoint(), c.args...)
		sOut, sErr, sExit := harness.EtcdctlStdin(t, c.stdin, d.Subj.Endpoint(), c.args...)
		name := "etcdctl " + strings.Join(c.args, " ")
		if (rExit == nil) != (sExit == nil) {
			t.Errorf("%s: exit %v on %s, %v on %s\nstderr %s: %s\nstderr %s: %s", name, rExit, d.Ref.Name(), sExit, d.Subj.Name(), d.Ref.Name(), rErr, d.Subj.Name(), sErr)
		}
		compareText(t, name+" stdout", refNorm(rOut), subjNorm(sOut), d)
		compareText(t, name+" stderr", refNorm(rErr), subjNorm(sErr), d)
	}
}

func compareText(t *testing.T, name, ref, subj string, d *harness.Diff) {
	t.Helper()
	if ref != subj {
		t.Errorf("%s differs:\n--- %s\n%s\n+++ %s\n%s", name, d.Ref.Name(), ref, d.Subj.Name(), subj)
	}
}
