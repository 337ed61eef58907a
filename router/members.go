package router

import (
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// Member is one member of the initial cluster.
type Member struct {
	ID       uint64
	Name     string
	PeerURLs []string
}

// InitialCluster computes the members named by etcd's --initial-cluster
// and the cluster id, exactly as etcd derives them for a new cluster: a
// member's id is the first 8 bytes of the SHA-1 of its sorted peer URLs
// followed by the cluster token, and the cluster id the first 8 bytes of
// the SHA-1 of the sorted member ids. So Mosaic and etcd started with the
// same flags report the same ids.
func InitialCluster(members map[string][]url.URL, token string) ([]Member, uint64, error) {
	var out []Member
	for name, urls := range members {
		peers := make([]string, len(urls))
		for i, u := range urls {
			peers[i] = u.String()
		}
		sort.Strings(peers)
		sum := sha1.Sum([]byte(strings.Join(peers, "") + token))
		out = append(out, Member{ID: binary.BigEndian.Uint64(sum[:8]), Name: name, PeerURLs: peers})
	}
	if len(out) == 0 {
		return nil, 0, fmt.Errorf("the initial cluster has no member")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	ids := make([]byte, 0, 8*len(out))
	for i, m := range out {
		if i > 0 && m.ID == out[i-1].ID {
			return nil, 0, fmt.Errorf("members %q and %q have the same peer URLs", m.Name, out[i-1].Name)
		}
		ids = binary.BigEndian.AppendUint64(ids, m.ID)
	}
	sum := sha1.Sum(ids)
	return out, binary.BigEndian.Uint64(sum[:8]), nil
}
