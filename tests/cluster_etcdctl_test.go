package tests

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// ctlHeader is the response header etcdctl prints with -w json.
type ctlHeader struct {
	ClusterID uint64 `json:"cluster_id"`
	MemberID  uint64 `json:"member_id"`
	Revision  int64  `json:"revision"`
	RaftTerm  uint64 `json:"raft_term"`
}

// ctlGetJSON is `etcdctl get -w json` (keys and values are base64 in the JSON).
type ctlGetJSON struct {
	Header ctlHeader `json:"header"`
	Kvs    []struct {
		Key            []byte `json:"key"`
		Value          []byte `json:"value"`
		CreateRevision int64  `json:"create_revision"`
		ModRevision    int64  `json:"mod_revision"`
		Version        int64  `json:"version"`
	} `json:"kvs"`
	Count int64 `json:"count"`
}

// ctlStatusJSON is one entry of `etcdctl endpoint status -w json`.
type ctlStatusJSON struct {
	Endpoint string `json:"Endpoint"`
	Status   struct {
		Header    ctlHeader `json:"header"`
		Version   string    `json:"version"`
		Leader    uint64    `json:"leader"`
		RaftIndex uint64    `json:"raftIndex"`
		RaftTerm  uint64    `json:"raftTerm"`
		IsLearner bool      `json:"isLearner"`
		Errors    []string  `json:"errors"`
	} `json:"Status"`
}

// ctlHealthJSON is one entry of `etcdctl endpoint health -w json`.
type ctlHealthJSON struct {
	Endpoint string `json:"endpoint"`
	Health   bool   `json:"health"`
	Error    string `json:"error"`
}

// ctlTable parses a table printed by etcdctl -w table into its rows, each a map from the
// column's header (upper-cased, as the table prints it) to the cell's text.
func ctlTable(out string) ([]map[string]string, error) {
	var header []string
	var rows []map[string]string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "│") && !strings.HasPrefix(line, "|") {
			continue // borders
		}
		sep := "│"
		if strings.HasPrefix(line, "|") {
			sep = "|"
		}
		cells := strings.Split(strings.Trim(line, sep), sep)
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if header == nil {
			for _, c := range cells {
				header = append(header, strings.ToUpper(c))
			}
			continue
		}
		if len(cells) != len(header) {
			return nil, fmt.Errorf("row %q has %d cells, the header %d", line, len(cells), len(header))
		}
		row := map[string]string{}
		for i, c := range cells {
			row[header[i]] = c
		}
		rows = append(rows, row)
	}
	if header == nil {
		return nil, fmt.Errorf("no table in %q", out)
	}
	return rows, nil
}

// TestClusterEtcdctl runs the real etcdctl against a 3-member cluster (Mosaic, or etcd with
// MOSAIC_TEST_SUBJECT=etcd) with --endpoints naming all three members, as an operator
// does, and checks what it prints: put, get, txn (both branches), member list, endpoint
// status --cluster and endpoint health --cluster. On Mosaic the keys span two ranges.
func TestClusterEtcdctl(t *testing.T) {
	t.Parallel()
	harness.BuildEtcdctl(t)
	c := startCluster3(t, "ctl/m")
	members := c.Members()
	eps := strings.Join(c.Endpoints(), ",")
	ctl := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, err := harness.EtcdctlStdin(t, stdin, eps, args...)
		if err != nil {
			t.Fatalf("etcdctl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}
	want := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s printed %q, want %q", what, got, want)
		}
	}
	getJSON := func(args ...string) ctlGetJSON {
		t.Helper()
		out := ctl("", append(append([]string{"get"}, args...), "-w", "json")...)
		var g ctlGetJSON
		if err := json.Unmarshal([]byte(out), &g); err != nil {
			t.Fatalf("get %v -w json: %v\n%s", args, err, out)
		}
		return g
	}

	// put and get, each write one revision.
	var put struct {
		Header ctlHeader `json:"header"`
	}
	out := ctl("", "put", "ctl/a", "a1", "-w", "json")
	if err := json.Unmarshal([]byte(out), &put); err != nil || put.Header.Revision == 0 || put.Header.ClusterID == 0 {
		t.Fatalf("put -w json printed %q (%v)", out, err)
	}
	r1 := put.Header.Revision
	want("put ctl/z z1", ctl("", "put", "ctl/z", "z1"), "OK\n")
	want("get ctl/a", ctl("", "get", "ctl/a"), "ctl/a\na1\n")
	want("get ctl/ --prefix", ctl("", "get", "ctl/", "--prefix"), "ctl/a\na1\nctl/z\nz1\n")
	g := getJSON("ctl/", "--prefix")
	if g.Header.Revision != r1+1 || g.Count != 2 || len(g.Kvs) != 2 ||
		string(g.Kvs[0].Key) != "ctl/a" || g.Kvs[0].ModRevision != r1 || g.Kvs[0].Version != 1 ||
		string(g.Kvs[1].Key) != "ctl/z" || string(g.Kvs[1].Value) != "z1" || g.Kvs[1].CreateRevision != r1+1 {
		t.Errorf("get ctl/ --prefix -w json after puts at %d and %d: %+v", r1, r1+1, g)
	}

	// A txn whose compares hold (on both ranges) takes the success branch, at one revision.
	success := fmt.Sprintf("value(\"ctl/a\") = \"a1\"\nmod(\"ctl/z\") = \"%d\"\n\nput ctl/a a2\nput ctl/m m1\nget ctl/z\n\nput ctl/failed x\n\n", r1+1)
	want("txn (success)", ctl(success, "txn"), "SUCCESS\n\nOK\n\nOK\n\nctl/z\nz1\n")
	// The same txn again fails its first compare and takes the failure branch.
	failure := "value(\"ctl/a\") = \"a1\"\n\nput ctl/never x\n\nput ctl/failed yes\nget ctl/a\n\n"
	want("txn (failure)", ctl(failure, "txn"), "FAILURE\n\nOK\n\nctl/a\na2\n")
	want("get ctl/ --prefix --keys-only", ctl("", "get", "ctl/", "--prefix", "--keys-only"), "ctl/a\n\nctl/failed\n\nctl/m\n\nctl/z\n\n")
	g = getJSON("ctl/", "--prefix")
	final := r1 + 3
	byKey := map[string][2]int64{}
	for _, kv := range g.Kvs {
		byKey[string(kv.Key)] = [2]int64{kv.ModRevision, kv.Version}
	}
	if g.Header.Revision != final || len(g.Kvs) != 4 ||
		byKey["ctl/a"] != [2]int64{r1 + 2, 2} || byKey["ctl/m"] != [2]int64{r1 + 2, 1} ||
		byKey["ctl/failed"] != [2]int64{r1 + 3, 1} || byKey["ctl/z"] != [2]int64{r1 + 1, 1} {
		t.Errorf("after the txns (success at %d, failure at %d): %+v", r1+2, r1+3, g)
	}
	// Every member serves the result, read through it alone.
	for _, m := range members {
		out, errOut, err := harness.Etcdctl(t, m.Endpoint(), "get", "ctl/a", "--print-value-only")
		if err != nil || out != "a2\n" {
			t.Errorf("get ctl/a through %s: %q %v %s", m.Name(), out, err, errOut)
		}
	}

	// member list: the three members with their names and URLs, in JSON and in the simple
	// format.
	var ml struct {
		Header ctlHeader `json:"header"`
		memberListJSON
	}
	out = ctl("", "member", "list", "-w", "json")
	if err := json.Unmarshal([]byte(out), &ml); err != nil {
		t.Fatalf("member list -w json: %v\n%s", err, out)
	}
	if ml.Header.ClusterID != put.Header.ClusterID {
		t.Errorf("member list: cluster id %x, put's %x", ml.Header.ClusterID, put.Header.ClusterID)
	}
	idOf := map[string]uint64{} // client URL -> member id
	if len(ml.Members) != 3 {
		t.Fatalf("member list -w json: %d members, want 3\n%s", len(ml.Members), out)
	}
	for _, m := range members {
		i := -1
		for j, lm := range ml.Members {
			if lm.Name == m.Name() {
				i = j
			}
		}
		if i < 0 {
			t.Errorf("member list -w json: no %s in %s", m.Name(), out)
			continue
		}
		lm := ml.Members[i]
		if lm.ID == 0 || lm.IsLearner || !slices.Equal(lm.PeerURLs, []string{m.PeerURL}) || !slices.Equal(lm.ClientURLs, []string{m.Endpoint()}) {
			t.Errorf("member list -w json lists %s as %+v, want peer %s, client %s, not a learner", m.Name(), lm, m.PeerURL, m.Endpoint())
		}
		idOf[m.Endpoint()] = lm.ID
	}
	var simple []string
	for _, m := range ml.Members {
		simple = append(simple, fmt.Sprintf("%x, started, %s, %s, %s, false", m.ID, m.Name, m.PeerURLs[0], m.ClientURLs[0]))
	}
	slices.Sort(simple)
	lines := strings.Split(strings.TrimSuffix(ctl("", "member", "list"), "\n"), "\n")
	slices.Sort(lines)
	if !slices.Equal(lines, simple) {
		t.Errorf("member list printed\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(simple, "\n"))
	}

	// endpoint status --cluster: one row a member, one leader that all agree on, one term,
	// and every member at the revision of the last write. A follower may apply the last
	// write a moment after the leader, and an election may happen between two members'
	// answers: the check is retried for a few seconds, and its last failure reported.
	var problem error
	deadline := time.Now().Add(10 * time.Second)
	for {
		problem = checkStatusJSON(ctl("", "endpoint", "status", "--cluster", "-w", "json"), idOf, put.Header.ClusterID, final)
		if problem == nil {
			problem = checkStatusTable(ctl("", "endpoint", "status", "--cluster", "-w", "table"), idOf)
		}
		if problem == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if problem != nil {
		t.Errorf("endpoint status --cluster: %v", problem)
	}

	// endpoint health --cluster: every member healthy, each named once.
	out = ctl("", "endpoint", "health", "--cluster")
	var healthy []string
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		ep, rest, ok := strings.Cut(line, " is healthy: successfully committed proposal: took = ")
		if !ok || rest == "" {
			t.Errorf("endpoint health --cluster printed %q", line)
		}
		healthy = append(healthy, ep)
	}
	slices.Sort(healthy)
	if wantEps := slices.Sorted(slices.Values(c.Endpoints())); !slices.Equal(healthy, wantEps) {
		t.Errorf("endpoint health --cluster: healthy %v, want %v", healthy, wantEps)
	}
	var hs []ctlHealthJSON
	out = ctl("", "endpoint", "health", "--cluster", "-w", "json")
	if err := json.Unmarshal([]byte(out), &hs); err != nil {
		t.Fatalf("endpoint health --cluster -w json: %v\n%s", err, out)
	}
	healthy = nil
	for _, h := range hs {
		if !h.Health || h.Error != "" {
			t.Errorf("endpoint health --cluster -w json: %+v", h)
		}
		healthy = append(healthy, h.Endpoint)
	}
	slices.Sort(healthy)
	if wantEps := slices.Sorted(slices.Values(c.Endpoints())); !slices.Equal(healthy, wantEps) {
		t.Errorf("endpoint health --cluster -w json: endpoints %v, want %v", healthy, wantEps)
	}
}

// checkStatusJSON checks `endpoint status --cluster -w json`: one entry for each member
// (idOf maps client URLs to member ids), all of cluster clusterID at revision rev, with the
// same term and the same leader, which is one of them.
func checkStatusJSON(out string, idOf map[string]uint64, clusterID uint64, rev int64) error {
	var sts []ctlStatusJSON
	if err := json.Unmarshal([]byte(out), &sts); err != nil {
		return fmt.Errorf("-w json: %v\n%s", err, out)
	}
	if len(sts) != len(idOf) {
		return fmt.Errorf("-w json: %d entries, want %d\n%s", len(sts), len(idOf), out)
	}
	seen := map[string]bool{}
	leaders := 0
	for _, st := range sts {
		s := st.Status
		id, ok := idOf[st.Endpoint]
		switch {
		case !ok || seen[st.Endpoint]:
			return fmt.Errorf("-w json: endpoint %s unknown or twice\n%s", st.Endpoint, out)
		case s.Header.MemberID != id || s.Header.ClusterID != clusterID:
			return fmt.Errorf("-w json: %s is member %x of cluster %x, want %x of %x", st.Endpoint, s.Header.MemberID, s.Header.ClusterID, id, clusterID)
		case s.Header.Revision != rev:
			return fmt.Errorf("-w json: %s at revision %d, want %d", st.Endpoint, s.Header.Revision, rev)
		case s.RaftTerm == 0 || s.RaftTerm != sts[0].Status.RaftTerm || s.Header.RaftTerm != s.RaftTerm:
			return fmt.Errorf("-w json: terms differ\n%s", out)
		case s.Leader == 0 || s.Leader != sts[0].Status.Leader:
			return fmt.Errorf("-w json: leaders differ\n%s", out)
		case s.IsLearner || len(s.Errors) != 0 || s.Version == "" || s.RaftIndex == 0:
			return fmt.Errorf("-w json: %s: %+v", st.Endpoint, s)
		}
		seen[st.Endpoint] = true
		if s.Leader == id {
			leaders++
		}
	}
	if leaders != 1 {
		return fmt.Errorf("-w json: %d members are the leader\n%s", leaders, out)
	}
	return nil
}

// checkStatusTable checks `endpoint status --cluster -w table`: a row for each member with
// its id, exactly one leader, no learner, one raft term.
func checkStatusTable(out string, idOf map[string]uint64) error {
	rows, err := ctlTable(out)
	if err != nil {
		return fmt.Errorf("-w table: %v", err)
	}
	if len(rows) != len(idOf) {
		return fmt.Errorf("-w table: %d rows, want %d\n%s", len(rows), len(idOf), out)
	}
	leaders := 0
	for _, r := range rows {
		id, ok := idOf[r["ENDPOINT"]]
		if !ok || r["ID"] != strconv.FormatUint(id, 16) {
			return fmt.Errorf("-w table: endpoint %q with id %q, want one of %v\n%s", r["ENDPOINT"], r["ID"], idOf, out)
		}
		if r["IS LEARNER"] != "false" || r["RAFT TERM"] == "" || r["RAFT TERM"] != rows[0]["RAFT TERM"] {
			return fmt.Errorf("-w table: learner or terms wrong\n%s", out)
		}
		switch r["IS LEADER"] {
		case "true":
			leaders++
		case "false":
		default:
			return fmt.Errorf("-w table: is leader %q\n%s", r["IS LEADER"], out)
		}
	}
	if leaders != 1 {
		return fmt.Errorf("-w table: %d leaders\n%s", leaders, out)
	}
	return nil
}
