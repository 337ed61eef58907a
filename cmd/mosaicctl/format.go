// format.go prints ranges as a table or as JSON. Keys are bytes: they print as they are when
// they are readable text, and quoted with Go escapes otherwise, so that no key can be mistaken
// for another; `""` is the empty key (the start of the first range, the open end of the last).

package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
)

// displayKey is how tables show a key.
func displayKey(k []byte) string {
	if len(k) == 0 {
		return `""`
	}
	s := string(k)
	if !utf8.ValidString(s) || strings.HasPrefix(s, `"`) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// humanBytes prints a size in bytes with binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), 0
	for v >= unit && i < 6 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i-1])
}

func nodeID(id uint64) string {
	if id == 0 {
		return "-"
	}
	return strconv.FormatUint(id, 16) // hex, as etcdctl prints member IDs
}

func writeTable(w io.Writer, ranges []*adminpb.RangeInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTART\tEND\tKEYS\tSIZE\tAPPLIED-INDEX\tLEADER\tREPLICAS\tLEARNERS")
	for _, r := range ranges {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\n", r.GetId(), displayKey(r.GetStart()), displayKey(r.GetEnd()),
			r.GetKeys(), humanBytes(r.GetSizeBytes()), r.GetAppliedIndex(), nodeID(r.GetLeader()), nodeIDs(r.GetReplicas()), nodeIDs(r.GetLearners()))
	}
	return tw.Flush()
}

// nodeIDs is a comma-separated list of node ids.
func nodeIDs(ids []uint64) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = nodeID(id)
	}
	return strings.Join(out, ",")
}

// nodeJSON is the JSON form of a node.
type nodeJSON struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	PeerURLs     []string `json:"peer_urls"`
	ClientURLs   []string `json:"client_urls"`
	Ranges       uint32   `json:"ranges"`
	Leaders      uint32   `json:"leaders"`
	OracleLeader bool     `json:"oracle_leader"`
}

// printNodes prints ListNodes' answer.
func printNodes(w io.Writer, asJSON bool, nodes []*adminpb.NodeInfo) error {
	if asJSON {
		out := make([]nodeJSON, len(nodes))
		for i, n := range nodes {
			out[i] = nodeJSON{ID: nodeID(n.GetId()), Name: n.GetName(), PeerURLs: n.GetPeerUrls(), ClientURLs: n.GetClientUrls(),
				Ranges: n.GetRanges(), Leaders: n.GetLeaders(), OracleLeader: n.GetOracleLeader()}
			if out[i].PeerURLs == nil {
				out[i].PeerURLs = []string{}
			}
			if out[i].ClientURLs == nil {
				out[i].ClientURLs = []string{}
			}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tCLIENT-URLS\tRANGES\tLEADERS\tORACLE-LEADER")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%t\n", nodeID(n.GetId()), n.GetName(), strings.Join(n.GetClientUrls(), ","),
			n.GetRanges(), n.GetLeaders(), n.GetOracleLeader())
	}
	return tw.Flush()
}

// rangeJSON is the JSON form of a range. start and end are the keys as text ("" when empty);
// a key that is not valid UTF-8 cannot be a JSON string, so it is given Go-quoted in start/end
// and exactly in start_base64/end_base64.
type rangeJSON struct {
	ID              uint64   `json:"id"`
	Start           string   `json:"start"`
	End             string   `json:"end"`
	StartBase64     string   `json:"start_base64,omitempty"`
	EndBase64       string   `json:"end_base64,omitempty"`
	Keys            int64    `json:"keys"`
	SizeBytes       int64    `json:"size_bytes"`
	AppliedIndex    uint64   `json:"applied_index"`
	AppliedRevision int64    `json:"applied_revision"`
	Leader          uint64   `json:"leader"`
	Replicas        []uint64 `json:"replicas"`
	// Learners: members holding a learner of the range (local reads).
	Learners []uint64 `json:"learners"`
	// Quiescent: the answering node's replica is idle and stopped ticking.
	Quiescent bool `json:"quiescent"`
}

func jsonKey(k []byte) (text, b64 string) {
	if utf8.Valid(k) {
		return string(k), ""
	}
	return strconv.Quote(string(k)), base64.StdEncoding.EncodeToString(k)
}

func toJSON(r *adminpb.RangeInfo) rangeJSON {
	j := rangeJSON{
		ID: r.GetId(), Keys: r.GetKeys(), SizeBytes: r.GetSizeBytes(), AppliedIndex: r.GetAppliedIndex(),
		AppliedRevision: r.GetAppliedRevision(), Leader: r.GetLeader(), Replicas: r.GetReplicas(),
		Learners: r.GetLearners(), Quiescent: r.GetQuiescent(),
	}
	if j.Replicas == nil {
		j.Replicas = []uint64{}
	}
	if j.Learners == nil {
		j.Learners = []uint64{}
	}
	j.Start, j.StartBase64 = jsonKey(r.GetStart())
	j.End, j.EndBase64 = jsonKey(r.GetEnd())
	return j
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printRanges prints `range list`: a table, or a JSON array.
func printRanges(w io.Writer, asJSON bool, ranges []*adminpb.RangeInfo) error {
	if !asJSON {
		return writeTable(w, ranges)
	}
	out := make([]rangeJSON, 0, len(ranges))
	for _, r := range ranges {
		out = append(out, toJSON(r))
	}
	return writeJSON(w, out)
}

// printSplit prints `range split`: the left and right ranges as a table, or a JSON object
// {"left": ..., "right": ...}.
func printSplit(w io.Writer, asJSON bool, resp *adminpb.SplitRangeResponse) error {
	if !asJSON {
		return writeTable(w, []*adminpb.RangeInfo{resp.GetLeft(), resp.GetRight()})
	}
	return writeJSON(w, struct {
		Left  rangeJSON `json:"left"`
		Right rangeJSON `json:"right"`
	}{toJSON(resp.GetLeft()), toJSON(resp.GetRight())})
}
