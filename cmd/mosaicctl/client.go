// client.go connects to the Admin service of one of the given endpoints.

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
)

// endpointAddr turns an etcdctl-style endpoint ("host:port", "http://host:port") into host:port.
func endpointAddr(ep string) (string, error) {
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil {
			return "", fmt.Errorf("endpoint %q: %w", ep, err)
		}
		switch u.Scheme {
		case "http":
		case "https", "unixs":
			return "", fmt.Errorf("endpoint %q: TLS is not supported by mosaicctl yet", ep)
		default:
			return "", fmt.Errorf("endpoint %q: scheme must be http", ep)
		}
		if u.Path != "" && u.Path != "/" {
			return "", fmt.Errorf("endpoint %q must not contain a path", ep)
		}
		ep = u.Host
	}
	if _, _, err := net.SplitHostPort(ep); err != nil {
		return "", fmt.Errorf("endpoint %q must be host:port or http://host:port", ep)
	}
	return ep, nil
}

// withAdmin connects to the endpoints (the first that answers, in order) within the dial
// timeout, then calls f with the command timeout.
func withAdmin(ctx context.Context, opts options, f func(context.Context, adminpb.AdminClient) error) error {
	var addrs []resolver.Address
	for _, ep := range opts.endpoints {
		addr, err := endpointAddr(ep)
		if err != nil {
			return err
		}
		addrs = append(addrs, resolver.Address{Addr: addr})
	}
	// A manual resolver hands every endpoint to gRPC's pick_first balancer, which fails over
	// from one to the next.
	r := manual.NewBuilderWithScheme("mosaicctl")
	r.InitialState(resolver.State{Addresses: addrs})
	conn, err := grpc.NewClient(r.Scheme()+":///endpoints",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()

	dialCtx, cancel := context.WithTimeout(ctx, opts.dialTimeout)
	err = waitReady(dialCtx, conn)
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("cannot connect to %s within %s", strings.Join(opts.endpoints, ","), opts.dialTimeout)
		}
		return err
	}

	callCtx, cancel := context.WithTimeout(ctx, opts.commandTimeout)
	defer cancel()
	return f(callCtx, adminpb.NewAdminClient(conn))
}

func waitReady(ctx context.Context, conn *grpc.ClientConn) error {
	conn.Connect()
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			return nil
		}
		if !conn.WaitForStateChange(ctx, s) {
			return ctx.Err()
		}
	}
}
