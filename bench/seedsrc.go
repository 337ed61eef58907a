package main

// seedSource is a small etcd client, built next to the benchmark tool in the
// temporary tools module (so this module needs no dependencies). It waits
// until the endpoint accepts a Put, writes the key the range workloads read,
// reads it back linearizably, and prints the server's reported version.
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
	endpoint := flag.String("endpoint", "127.0.0.1:2379", "client endpoint")
	key := flag.String("key", "mosaic-bench-range-key", "key to write")
	valSize := flag.Int("val-size", 256, "value size")
	wait := flag.Duration("wait", 30*time.Second, "how long to retry")
	flag.Parse()

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{*endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
	defer cli.Close()
	val := strings.Repeat("v", *valSize)
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
		fmt.Fprintln(os.Stderr, "put:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, *key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "get:", err)
		os.Exit(1)
	}
	if len(resp.Kvs) != 1 || !bytes.Equal(resp.Kvs[0].Value, []byte(val)) {
		fmt.Fprintf(os.Stderr, "get: read back %d kvs, not the value written\n", len(resp.Kvs))
		os.Exit(1)
	}
	version := "unknown"
	if st, err := cli.Status(ctx, *endpoint); err == nil {
		version = st.Version
	} else {
		version = "unknown (Status: " + err.Error() + ")"
	}
	fmt.Printf("seeded key=%q revision=%d server-version=%s\n", *key, resp.Header.Revision, version)
}
`
