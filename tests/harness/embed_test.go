package harness

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// TestStartEtcdOnTakenPort: etcd's error for a port another process holds
// is recognized as such, so StartEtcd tries other ports.
func TestStartEtcdOnTakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := mustURL(t, "http://"+l.Addr().String())
	e, _, _, err := startEtcdOn(t, taken, mustURL(t, localURL(FreePort(t))))
	if e != nil && err == nil {
		e.Close()
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("etcd on a taken port: %v, want an error that is EADDRINUSE", err)
	}
}
