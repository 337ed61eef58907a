package harness

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Ports are chosen below the kernel's usual ephemeral range (32768-60999), so the local
// port of an outgoing connection never takes a port that a server is about to bind (or to
// bind again on Restart). A port is handed out at most once per test binary run.
const (
	portLow  = 20000
	portHigh = 32000
)

var ports struct {
	sync.Mutex
	used map[int]bool
}

// FreePort returns a TCP port on 127.0.0.1 that was free when checked and that no other
// caller in this process has been given.
func FreePort(t testing.TB) int {
	t.Helper()
	ports.Lock()
	defer ports.Unlock()
	if ports.used == nil {
		ports.used = map[int]bool{}
	}
	for range 1000 {
		p := portLow + rand.IntN(portHigh-portLow)
		if ports.used[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		l.Close()
		ports.used[p] = true
		return p
	}
	t.Fatalf("no free port found in [%d, %d)", portLow, portHigh)
	return 0
}

func localURL(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }
