package main

import "fmt"

// Watch workloads: etcd's own `benchmark watch-latency`, which puts one key
// --put-total times at --put-rate and measures, for every watcher, the time
// from each put's response to the matching event (its "Watch events
// summary"), plus the puts' own latencies ("Put summary"). Events
// delivered per second = watchers × put-total / the watch summary's total.
//
// The three shapes: one watcher; 1,000 watchers on 10 streams; and the
// scale case, 10,000 watchers on 1,000 streams (its put rate is lower so
// the server delivers, not the client's goroutines, set the pace).
//
// Workloads appends these when -watch is set (the default); the run parses
// the part after "Watch events summary:" (SplitWatchOutput), whose
// Requests/sec is events delivered per second.

// WatchWorkloads returns the watch workloads in the order they run.
func WatchWorkloads(cfg *Config) []Workload {
	wl := func(streams, perStream, total, rate int) []string {
		return []string{"watch-latency", "--streams", fmt.Sprint(streams), "--watchers-per-stream", fmt.Sprint(perStream),
			"--put-total", fmt.Sprint(total), "--put-rate", fmt.Sprint(rate),
			"--key-size", fmt.Sprint(cfg.KeySize), "--val-size", fmt.Sprint(cfg.ValSize),
			"--clients", "10", "--conns", "10"}
	}
	return []Workload{
		{"watch-1", "watch latency, 1 watcher", wl(1, 1, 2000, 1000)},
		{"watch-1000", "watch latency, 1,000 watchers on 10 streams", wl(10, 100, 1000, 200)},
		{"watch-10000", "watch latency, 10,000 watchers on 1,000 streams", wl(1000, 10, 200, 50)},
	}
}

// SplitWatchOutput returns the put summary and the watch events summary of
// a watch-latency run.
func SplitWatchOutput(out string) (puts, events string) {
	const marker = "Watch events summary:"
	for i := 0; i+len(marker) <= len(out); i++ {
		if out[i:i+len(marker)] == marker {
			return out[:i], out[i+len(marker):]
		}
	}
	return out, ""
}
