// cli.go parses the command line and runs one command. Global flags may come before or after
// the command words ("mosaicctl range list --json"); "--" ends the flags, for a split key that
// starts with "-".

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/mosaic-kv/mosaic/proto/adminpb"
)

const usage = `Usage: mosaicctl [flags] COMMAND

Commands:
  range list         List the ranges of the keyspace, with their leader and replicas.
  range split KEY    Split the range that holds KEY so that KEY starts a new range
                     (write "range split -- KEY" for a KEY that starts with "-").
  range transfer-leader ID --to NODE
                     Hand range ID's lead to NODE (a member id in hex or a member name).
                     Range 0 is the revision oracle: the ranges it holds follow its lead.
                     Another range's lead stays on NODE until transferred again.
  range move ID --to NODE [--from NODE]
                     Move range ID's replica from NODE (default: the one on the member
                     holding the most ranges) to NODE, online: the new replica joins as a
                     learner, catches up, becomes a voter, and the old one leaves.
  node list          List the members with the ranges they hold and lead.

Flags:
  --endpoints URL[,URL]     Nodes to ask, as host:port or http://host:port (default 127.0.0.1:2379)
  --json                    Print JSON instead of a table.
  --to NODE                 The target of transfer-leader and move.
  --from NODE               The replica move takes away.
  --dial-timeout DURATION   Time allowed to connect (default 5s).
  --command-timeout DURATION
                            Time allowed for the request once connected (default 5s;
                            30s for range split, which waits for the range to drain;
                            2m for range move).
  -h, --help                Print this help.
`

// options are the global flags.
type options struct {
	endpoints      []string
	json           bool
	to, from       string
	dialTimeout    time.Duration
	commandTimeout time.Duration
}

// usageError is a command line that cannot be run; run prints the usage after it.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErr(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// parseArgs splits args into the global flags and the command words.
func parseArgs(args []string) (opts options, words []string, err error) {
	opts = options{dialTimeout: 5 * time.Second, commandTimeout: 5 * time.Second}
	endpoints := "127.0.0.1:2379"
	fs := flag.NewFlagSet("mosaicctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&endpoints, "endpoints", endpoints, "")
	fs.BoolVar(&opts.json, "json", false, "")
	fs.StringVar(&opts.to, "to", "", "")
	fs.StringVar(&opts.from, "from", "", "")
	fs.DurationVar(&opts.dialTimeout, "dial-timeout", opts.dialTimeout, "")
	fs.DurationVar(&opts.commandTimeout, "command-timeout", opts.commandTimeout, "")

	var rest []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, rest = args[:i], args[i+1:]
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return opts, nil, err
			}
			return opts, nil, usageErr("%v", err)
		}
		if fs.NArg() == 0 {
			break
		}
		words = append(words, fs.Arg(0))
		args = fs.Args()[1:]
	}
	words = append(words, rest...)
	timeoutSet := false
	fs.Visit(func(f *flag.Flag) { timeoutSet = timeoutSet || f.Name == "command-timeout" })
	if !timeoutSet && len(words) >= 2 && words[0] == "range" {
		switch words[1] {
		case "move":
			opts.commandTimeout = 2 * time.Minute
		case "split":
			opts.commandTimeout = 30 * time.Second
		}
	}

	for _, e := range strings.Split(endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			opts.endpoints = append(opts.endpoints, e)
		}
	}
	if len(opts.endpoints) == 0 {
		return opts, nil, usageErr("--endpoints is empty")
	}
	if opts.dialTimeout <= 0 || opts.commandTimeout <= 0 {
		return opts, nil, usageErr("timeouts must be positive")
	}
	return opts, words, nil
}

// run executes one mosaicctl command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, words, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if err == nil {
		err = dispatch(ctx, opts, words, stdout)
	}
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "Error: %s\n", describe(err))
	if ue := (*usageError)(nil); errors.As(err, &ue) {
		fmt.Fprint(stderr, "\n"+usage)
	}
	return 1
}

// describe prints gRPC errors as "Code: message", other errors as they are.
func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", s.Code(), s.Message())
	}
	return err.Error()
}

func dispatch(ctx context.Context, opts options, words []string, stdout io.Writer) error {
	switch {
	case len(words) == 0:
		return usageErr("no command given")
	case words[0] == "node":
		if len(words) != 2 || words[1] != "list" {
			return usageErr("node takes one subcommand: list")
		}
		return withAdmin(ctx, opts, func(ctx context.Context, c adminpb.AdminClient) error {
			resp, err := c.ListNodes(ctx, &adminpb.ListNodesRequest{})
			if err != nil {
				return err
			}
			return printNodes(stdout, opts.json, resp.GetNodes())
		})
	case words[0] != "range":
		return usageErr("unknown command %q", words[0])
	case len(words) == 1:
		return usageErr("range needs a subcommand: list, split, transfer-leader or move")
	}
	switch sub, args := words[1], words[2:]; sub {
	case "list":
		if len(args) != 0 {
			return usageErr("range list takes no arguments, got %q", args)
		}
		return withAdmin(ctx, opts, func(ctx context.Context, c adminpb.AdminClient) error {
			resp, err := c.ListRanges(ctx, &adminpb.ListRangesRequest{})
			if err != nil {
				return err
			}
			return printRanges(stdout, opts.json, resp.GetRanges())
		})
	case "split":
		if len(args) != 1 {
			return usageErr("range split takes exactly one KEY")
		}
		if args[0] == "" {
			return usageErr("the split key must not be empty")
		}
		return withAdmin(ctx, opts, func(ctx context.Context, c adminpb.AdminClient) error {
			resp, err := c.SplitRange(ctx, &adminpb.SplitRangeRequest{Key: []byte(args[0])})
			if err != nil {
				return err
			}
			return printSplit(stdout, opts.json, resp)
		})
	case "transfer-leader":
		id, err := rangeIDTo(sub, args, opts)
		if err != nil {
			return err
		}
		return withAdmin(ctx, opts, func(ctx context.Context, c adminpb.AdminClient) error {
			to, err := resolveNode(ctx, c, opts.to)
			if err != nil {
				return err
			}
			resp, err := c.TransferLeader(ctx, &adminpb.TransferLeaderRequest{RangeId: id, To: to})
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "range %d is led by %s\n", id, nodeID(resp.GetLeader()))
			return nil
		})
	case "move":
		id, err := rangeIDTo(sub, args, opts)
		if err != nil {
			return err
		}
		return withAdmin(ctx, opts, func(ctx context.Context, c adminpb.AdminClient) error {
			to, err := resolveNode(ctx, c, opts.to)
			if err != nil {
				return err
			}
			var from uint64
			if opts.from != "" {
				if from, err = resolveNode(ctx, c, opts.from); err != nil {
					return err
				}
			}
			resp, err := c.MoveReplica(ctx, &adminpb.MoveReplicaRequest{RangeId: id, To: to, From: from})
			if err != nil {
				return err
			}
			return printRanges(stdout, opts.json, []*adminpb.RangeInfo{resp.GetRange()})
		})
	default:
		return usageErr("unknown range subcommand %q", sub)
	}
}

// rangeIDTo reads the arguments of a range subcommand that takes one range ID and --to.
func rangeIDTo(sub string, args []string, opts options) (uint64, error) {
	if len(args) != 1 {
		return 0, usageErr("range %s takes exactly one range ID", sub)
	}
	id, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil {
		return 0, usageErr("bad range ID %q", args[0])
	}
	if opts.to == "" {
		return 0, usageErr("range %s needs --to NODE", sub)
	}
	return id, nil
}

// resolveNode turns a member name or hex id into the member id.
func resolveNode(ctx context.Context, c adminpb.AdminClient, node string) (uint64, error) {
	resp, err := c.ListNodes(ctx, &adminpb.ListNodesRequest{})
	if err != nil {
		return 0, err
	}
	for _, n := range resp.GetNodes() {
		if n.GetName() == node || nodeID(n.GetId()) == strings.ToLower(node) {
			return n.GetId(), nil
		}
	}
	return 0, fmt.Errorf("no member named or with id %q", node)
}
