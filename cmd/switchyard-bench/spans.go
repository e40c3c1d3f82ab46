package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// spanLine is what spanBreakdown reads of a span the console exporter
// wrote (one JSON object per line of a service's log).
type spanLine struct {
	Name      string
	SpanKind  int
	StartTime time.Time
	EndTime   time.Time
}

// spanStat is the median duration of one kind of span of one service.
type spanStat struct {
	service, name string
	kind          int
	count         int
	median        time.Duration
}

// spanBreakdown reads the spans in the services' logs (a stack started
// with spans) and returns the median duration of each kind, longest
// first: where a task's time goes, hop by hop.
func spanBreakdown(services []*process) ([]spanStat, error) {
	type key struct {
		service, name string
		kind          int
	}
	durations := map[key][]time.Duration{}
	for _, p := range services {
		f, err := os.Open(p.logPath)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			if !strings.HasPrefix(sc.Text(), `{"Name"`) {
				continue
			}
			var s spanLine
			if json.Unmarshal(sc.Bytes(), &s) != nil || s.EndTime.Before(s.StartTime) {
				continue
			}
			k := key{p.name, s.Name, s.SpanKind}
			durations[k] = append(durations[k], s.EndTime.Sub(s.StartTime))
		}
		err = sc.Err()
		_ = f.Close()
		if err != nil {
			return nil, err
		}
	}
	var out []spanStat
	for k, ds := range durations {
		slices.Sort(ds)
		out = append(out, spanStat{service: k.service, name: k.name, kind: k.kind, count: len(ds), median: ds[len(ds)/2]})
	}
	slices.SortFunc(out, func(a, b spanStat) int { return int(b.median - a.median) })
	return out, nil
}

// spanKinds are OpenTelemetry's span kinds by number, as the console
// exporter writes them.
var spanKinds = map[int]string{1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}

func printSpans(w io.Writer, stats []spanStat) {
	fmt.Fprintln(w, "  median span durations (all steps together):")
	for _, s := range stats {
		fmt.Fprintf(w, "    %-10s %6d × %-12s %-8s %s\n", ms(s.median), s.count, s.service, spanKinds[s.kind], s.name)
	}
}
