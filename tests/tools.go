//go:build tools

package tests

// The harness builds etcdctl from this module (go build go.etcd.io/etcd/etcdctl/v3); this
// import keeps the requirement in go.mod.
import _ "go.etcd.io/etcd/etcdctl/v3"
