package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Result is what one run of etcd's benchmark tool reported. Latencies are in
// seconds, as the tool prints them.
type Result struct {
	TotalSecs   float64
	Slowest     float64
	Fastest     float64
	Average     float64
	Stddev      float64
	RPS         float64
	Percentiles map[string]float64 // "50", "90", "99", "99.9", ...
	Errors      map[string]int     // error message -> count (the tool's "Error distribution")
}

// P returns a latency percentile ("99", "99.9") and whether it was reported.
func (r *Result) P(p string) (float64, bool) {
	v, ok := r.Percentiles[p]
	return v, ok
}

// ErrorCount is the number of failed requests the tool reported.
func (r *Result) ErrorCount() int {
	n := 0
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// ErrorSummary is a short, stable description of the reported errors.
func (r *Result) ErrorSummary() string {
	if len(r.Errors) == 0 {
		return ""
	}
	msgs := make([]string, 0, len(r.Errors))
	for m := range r.Errors {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool { return r.Errors[msgs[i]] > r.Errors[msgs[j]] })
	parts := make([]string, 0, len(msgs))
	for _, m := range msgs {
		parts = append(parts, fmt.Sprintf("%d× %s", r.Errors[m], m))
	}
	return strings.Join(parts, "; ")
}

// ParseBenchmarkOutput parses the text report printed by
// go.etcd.io/etcd/v3/tools/benchmark (package go.etcd.io/etcd/pkg/v3/report).
// The progress bar (which uses carriage returns) may be mixed in; it is
// ignored. The report looks like:
//
//	Summary:
//	  Total:	1.0042 secs.
//	  ...
//	  Average:	0.0005 secs.
//	  Requests/sec:	1991.6503
//	...
//	Latency distribution:
//	  99% in 0.0011 secs.
//	...
//	Error distribution:
//	  [12]	rpc error: ...
//
// A report with neither a summary nor errors is an error.
func ParseBenchmarkOutput(out string) (*Result, error) {
	r := &Result{Percentiles: map[string]float64{}, Errors: map[string]int{}}
	lines := strings.FieldsFunc(out, func(c rune) bool { return c == '\n' || c == '\r' })
	section := ""
	haveSummary, haveRPS, haveAvg := false, false, false
	for _, raw := range lines {
		line := strings.TrimSpace(raw)
		switch line {
		case "Summary:":
			section, haveSummary = "summary", true
			continue
		case "Response time histogram:":
			section = "histogram"
			continue
		case "Latency distribution:":
			section = "latency"
			continue
		case "Error distribution:":
			section = "errors"
			continue
		}
		switch section {
		case "summary":
			name, val, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			f, err := parseSecs(val)
			if err != nil {
				return nil, fmt.Errorf("summary line %q: %v", line, err)
			}
			switch name {
			case "Total":
				r.TotalSecs = f
			case "Slowest":
				r.Slowest = f
			case "Fastest":
				r.Fastest = f
			case "Average":
				r.Average, haveAvg = f, true
			case "Stddev":
				r.Stddev = f
			case "Requests/sec":
				r.RPS, haveRPS = f, true
			}
		case "latency":
			// "99.9% in 0.0023 secs."
			pct, rest, ok := strings.Cut(line, "% in ")
			if !ok {
				continue
			}
			f, err := parseSecs(rest)
			if err != nil {
				return nil, fmt.Errorf("latency line %q: %v", line, err)
			}
			r.Percentiles[pct] = f
		case "errors":
			// "[12]\trpc error: code = Unavailable desc = ..."
			if !strings.HasPrefix(line, "[") {
				continue
			}
			num, msg, ok := strings.Cut(line[1:], "]")
			if !ok {
				continue
			}
			n, err := strconv.Atoi(num)
			if err != nil {
				return nil, fmt.Errorf("error line %q: %v", line, err)
			}
			r.Errors[strings.TrimSpace(msg)] += n
		}
	}
	if !haveSummary {
		if len(r.Errors) > 0 {
			return r, fmt.Errorf("no successful requests: %s", r.ErrorSummary())
		}
		return nil, fmt.Errorf("no summary in benchmark output")
	}
	if !haveRPS || !haveAvg {
		return nil, fmt.Errorf("summary without Requests/sec or Average")
	}
	if _, ok := r.Percentiles["99"]; !ok {
		return nil, fmt.Errorf("no 99%% latency in benchmark output")
	}
	return r, nil
}

// parseSecs parses "\t0.0005 secs." or "1991.6503".
func parseSecs(s string) (float64, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(s, ".")
	s = strings.TrimSuffix(s, " secs")
	return strconv.ParseFloat(strings.TrimSpace(s), 64)
}
