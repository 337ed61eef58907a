// Package tests holds Mosaic's end-to-end tests: differential tests that run the same
// requests against Mosaic and an embedded etcd and require identical answers, restart and
// crash tests, and linearizability checks. See package harness for how servers are started
// and compared; MOSAIC_TEST_SUBJECT=etcd runs every test against an etcd process instead of
// Mosaic, which checks the tests themselves.
package tests

import (
	"testing"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
