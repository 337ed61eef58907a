// Command mosaicctl is the operators' CLI of a Mosaic cluster. It talks to the Admin service
// (proto/adminpb) that every node serves on its client URLs.
//
//	mosaicctl [--endpoints URL[,URL]] [--json] [--dial-timeout 5s] [--command-timeout 5s] range list
//	mosaicctl [flags] range split KEY
//
// Output goes to stdout; errors go to stderr with exit status 1, as etcdctl does.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
