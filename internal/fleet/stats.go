package fleet

import (
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram counts durations in log-linear buckets (exact below 64 µs,
// then 32 per power of two: about 3% resolution), without locks.
type histogram struct {
	counts [2048]atomic.Int64
	n      atomic.Int64
	max    atomic.Int64
}

func bucketOf(us uint64) int {
	if us < 64 {
		return int(us)
	}
	e := bits.Len64(us) - 6 // us>>e is in [32, 64)
	return 64 + (e-1)*32 + int(us>>uint(e)) - 32
}

// bucketValue is the smallest value in bucket b, in microseconds.
func bucketValue(b int) uint64 {
	if b < 64 {
		return uint64(b)
	}
	e := (b-64)/32 + 1
	return uint64(32+(b-64)%32) << uint(e)
}

func (h *histogram) add(d time.Duration) {
	us := max(d.Microseconds(), 0)
	h.counts[bucketOf(uint64(us))].Add(1)
	h.n.Add(1)
	for {
		old := h.max.Load()
		if us <= old || h.max.CompareAndSwap(old, us) {
			return
		}
	}
}

// quantile returns the q-quantile (0..1), rounded down to its bucket.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := int64(q * float64(n))
	if rank >= n {
		rank = n - 1
	}
	var seen int64
	for b := range h.counts {
		seen += h.counts[b].Load()
		if seen > rank {
			return time.Duration(bucketValue(b)) * time.Microsecond
		}
	}
	return time.Duration(h.max.Load()) * time.Microsecond
}

// stats are the agents' measurements over one phase.
type stats struct {
	start time.Time
	eps   []epStats
}

type epStats struct {
	lat     histogram
	reports atomic.Int64
	errors  atomic.Int64
	fulls   atomic.Int64
}

func newStats(endpoints int) *stats {
	return &stats{start: time.Now(), eps: make([]epStats, endpoints)}
}

func (s *stats) record(ep int, took time.Duration, err error, full bool) {
	e := &s.eps[ep]
	if err != nil {
		e.errors.Add(1)
		return
	}
	e.reports.Add(1)
	if full {
		e.fulls.Add(1)
	}
	e.lat.add(took)
}

// summary is the phase so far, for progress lines.
func (s *stats) summary() string {
	var all histogram
	var n, errs int64
	for i := range s.eps {
		all.merge(&s.eps[i].lat)
		n += s.eps[i].reports.Load()
		errs += s.eps[i].errors.Load()
	}
	return fmt.Sprintf("reports %d, errors %d, p50 %s p99 %s", n, errs, all.quantile(0.5), all.quantile(0.99))
}
