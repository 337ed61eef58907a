// Package harness starts Mosaic and etcd for end-to-end tests and compares them.
//
// A test talks to two stores: the reference, an embedded etcd started in-process by
// StartEtcd, and the subject, started by StartSubject. The subject is the Mosaic binary
// (built once per test binary run by BuildMosaic and started by StartMosaic) unless the
// environment variable MOSAIC_TEST_SUBJECT=etcd selects a real etcd process instead; that
// mode validates the harness and the tests themselves while Mosaic is incomplete. The etcd
// process is this very test binary re-executed with the environment variable
// MOSAIC_TEST_ETCDMAIN=1, which makes Main run etcd's own main function; so a test package
// using the harness must call Main from its TestMain.
//
// Diff runs the same operation against both stores and reports any difference in the
// responses (after Normalize has cleared the header fields that identify a cluster, member
// or Raft term; revisions are kept) or in the errors (compared by gRPC code and message).
//
// StartCluster starts a multi-member cluster of the subject (Mosaic, or etcd with
// MOSAIC_TEST_SUBJECT=etcd) from etcd's static bootstrap flags, for fault tests that kill,
// stop and restart members.
//
// Etcdctl and Mosaicctl run the command-line tools; the etcdctl binary is built once per
// test binary run from the go.etcd.io/etcd/etcdctl/v3 module this module requires.
package harness
