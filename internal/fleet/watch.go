package fleet

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/testcluster"
)

// snapshot is what the watcher last saw through the public API.
type snapshot struct {
	at   time.Time
	info *drummerpb.ClusterInfo
	// dead holds when each host was first seen dead (over the whole run).
	dead map[string]time.Time
}

func (s *snapshot) summary() string {
	h := s.info.GetHealth()
	keys := slices.Sorted(maps.Keys(h))
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, h[k]))
	}
	hs := s.info.GetHostsByState()
	return fmt.Sprintf("shards %d [%s], hosts up=%d suspect=%d dead=%d, repairs %d",
		s.info.GetShards(), strings.Join(parts, " "), hs["up"], hs["suspect"], hs["dead"], s.info.GetRepairsInFlight())
}

// watcher polls GetClusterInfo and the hosts that are not up.
type watcher struct {
	d     drummerpb.DrummerClient
	every time.Duration
	quit  chan struct{}
	done  chan struct{}

	mu    sync.Mutex
	cur   *snapshot
	next  chan struct{}
	dead  map[string]time.Time
	notUp map[string]bool // since takeNotUp
	once  sync.Once
}

func newWatcher(d drummerpb.DrummerClient, every time.Duration) *watcher {
	return &watcher{d: d, every: every, quit: make(chan struct{}), done: make(chan struct{}), next: make(chan struct{}),
		dead: map[string]time.Time{}, notUp: map[string]bool{}}
}

func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	for {
		w.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-w.quit:
			return
		case <-time.After(w.every):
		}
	}
}

func (w *watcher) stop() {
	w.once.Do(func() { close(w.quit) })
	<-w.done
}

func (w *watcher) poll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := w.d.GetClusterInfo(ctx, &drummerpb.GetClusterInfoRequest{})
	if err != nil {
		return
	}
	states := map[string]string{}
	if info.GetHostsByState()["suspect"]+info.GetHostsByState()["dead"] > 0 {
		token := ""
		for range 1000 {
			resp, err := w.d.ListHosts(ctx, &drummerpb.ListHostsRequest{PageSize: 5000, PageToken: token, State: []string{"suspect", "dead"}})
			if err != nil {
				return
			}
			for _, h := range resp.Hosts {
				states[h.Id] = h.State
			}
			if token = resp.NextPageToken; token == "" {
				break
			}
		}
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, st := range states {
		w.notUp[id] = true
		if _, ok := w.dead[id]; !ok && st == "dead" {
			w.dead[id] = now
		}
	}
	w.cur = &snapshot{at: now, info: info, dead: maps.Clone(w.dead)}
	close(w.next)
	w.next = make(chan struct{})
}

// latest returns the last snapshot (nil before the first) and a channel
// closed when the next one arrives.
func (w *watcher) latest() (*snapshot, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur, w.next
}

// takeNotUp returns the hosts seen suspect or dead since the last call.
func (w *watcher) takeNotUp() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.notUp
	w.notUp = map[string]bool{}
	return out
}

// ---------------------------------------------------------------------------
// CPU and RSS of the drummer processes, from /proc.

type usage struct {
	cores             float64
	rssMiB, maxRSSMiB float64
}

type procSample struct {
	pid   int
	ticks uint64
	at    time.Time
}

type acc struct {
	ticks   uint64
	wall    time.Duration
	rss     uint64 // last, KiB
	maxRSS  uint64
	samples int
}

// sampler reads /proc/PID/stat and /proc/PID/status of every drummer
// server once per period and accumulates per phase.
type sampler struct {
	tc   *testcluster.Cluster
	quit chan struct{}
	done chan struct{}
	once sync.Once

	mu   sync.Mutex
	last []procSample
	accs []acc
}

func newSampler(tc *testcluster.Cluster) *sampler {
	return &sampler{tc: tc, quit: make(chan struct{}), done: make(chan struct{}),
		last: make([]procSample, len(tc.Drummers)), accs: make([]acc, len(tc.Drummers))}
}

// clockTicks is USER_HZ, 100 on every Linux platform Go supports.
const clockTicks = 100

func (s *sampler) run(ctx context.Context, every time.Duration) {
	defer close(s.done)
	for {
		s.sample()
		select {
		case <-ctx.Done():
			return
		case <-s.quit:
			return
		case <-time.After(every):
		}
	}
}

func (s *sampler) stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
}

func (s *sampler) sample() {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, n := range s.tc.Drummers {
		pid := n.Pid()
		if pid == 0 || !n.Running() {
			s.last[i] = procSample{}
			continue
		}
		ticks, err := procTicks(pid)
		if err != nil {
			continue
		}
		rss, _ := procRSS(pid)
		a := &s.accs[i]
		if l := s.last[i]; l.pid == pid && ticks >= l.ticks {
			a.ticks += ticks - l.ticks
			a.wall += now.Sub(l.at)
		}
		a.rss = rss
		a.maxRSS = max(a.maxRSS, rss)
		a.samples++
		s.last[i] = procSample{pid: pid, ticks: ticks, at: now}
	}
}

// restarted forgets server i's last sample (a new process).
func (s *sampler) restarted(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last[i] = procSample{}
}

// take returns the usage since the last call, by server index.
func (s *sampler) take() map[int]usage {
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]usage{}
	for i, a := range s.accs {
		if a.samples == 0 {
			continue
		}
		u := usage{rssMiB: float64(a.rss) / 1024, maxRSSMiB: float64(a.maxRSS) / 1024}
		if a.wall > 0 {
			u.cores = float64(a.ticks) / clockTicks / a.wall.Seconds()
		}
		out[i] = u
		s.accs[i] = acc{}
	}
	return out
}

// procTicks is utime+stime of a process, in clock ticks.
func procTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after its ")".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return u + st, nil
}

// procRSS is the resident set size of a process, in KiB.
func procRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}
