package main

// seedSource is a small etcd client, built next to the benchmark tool in the
// temporary tools module (so this module needs no dependencies). For each
// endpoint in turn it waits until a Put through it succeeds (writing the key
// the range workloads read), reads the key back linearizably through it, and
// prints the server's reported version (and, on a cluster, its leader).
const seedSource = `package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "client endpoints, comma-separated: the key is written through each")
	key := flag.String("key", "mosaic-bench-range-key", "key to write")
	valSize := flag.Int("val-size", 256, "value size")
	wait := flag.Duration("wait", 30*time.Second, "how long to retry a put through each endpoint")
	flag.Parse()

	eps := strings.Split(*endpoints, ",")
	val := strings.Repeat("v", *valSize)
	var revs []string
	version, leader := "unknown", ""
	for _, ep := range eps {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{ep},
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			fail(ep, "client", err)
		}
		// Until a put through this endpoint succeeds.
		deadline := time.Now().Add(*wait)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err = cli.Put(ctx, *key, val)
			cancel()
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			fail(ep, "put", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := cli.Get(ctx, *key)
		if err != nil {
			fail(ep, "get", err)
		}
		if len(resp.Kvs) != 1 || !bytes.Equal(resp.Kvs[0].Value, []byte(val)) {
			fail(ep, "get", fmt.Errorf("read back %d kvs, not the value written", len(resp.Kvs)))
		}
		revs = append(revs, fmt.Sprint(resp.Header.Revision))
		if st, err := cli.Status(ctx, ep); err == nil {
			version = st.Version
			leader = fmt.Sprintf("%x", st.Leader)
		} else {
			version = "unknown (Status: " + err.Error() + ")"
		}
		cancel()
		cli.Close()
	}
	if len(eps) == 1 {
		fmt.Printf("seeded key=%q revision=%s server-version=%s\n", *key, revs[0], version)
		return
	}
	fmt.Printf("seeded key=%q through each of %d members, read back at revisions %s, server-version=%s, leader=%s\n",
		*key, len(eps), strings.Join(revs, ","), version, leader)
}

func fail(ep, what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %s: %v\n", ep, what, err)
	os.Exit(1)
}
`
