package scheduler

import (
	"container/heap"
	"time"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
)

// liveness notices when a registered host crosses a liveness threshold
// (up → suspect → dead, or back to up) without reading every host each
// round: each host has one timer, due when its next threshold could pass.
// A report only touches the timer of a host that is not up; an up host's
// timer, when due, re-arms itself from the host's last report. The cost
// is O(log hosts) per host per suspect_timeout, plus O(1) per report.
type liveness struct {
	built  bool
	state  map[string]planner.Liveness
	timers timerHeap
	// armed holds the due time of each host's timer in the heap.
	armed  map[string]time.Time
	counts [3]int // registered hosts by liveness
	// unreg lists reporting hosts the DB does not have: they are planned
	// every second until registered (or forgotten).
	unreg map[string]struct{}
	// down holds the registered hosts judged suspect or dead.
	down map[string]struct{}
}

func (l *liveness) reset() { *l = liveness{} }

func (l *liveness) ensure() {
	if l.state == nil {
		l.state = map[string]planner.Liveness{}
		l.armed = map[string]time.Time{}
		l.unreg = map[string]struct{}{}
		l.down = map[string]struct{}{}
	}
}

// arm makes the host's timer due at t, unless it is already due earlier.
func (l *liveness) arm(id string, t time.Time) {
	if at, ok := l.armed[id]; ok && !at.After(t) {
		return
	}
	l.armed[id] = t
	heap.Push(&l.timers, timer{at: t, host: id})
}

// update arms the timers of hosts the DB changed (registered, replaced,
// removed), or of every host after a snapshot or on the first round.
func (l *liveness) update(st *db.State, d db.Dirty, now time.Time) {
	l.ensure()
	if !l.built || d.All {
		l.built = true
		for id := range st.Hosts {
			l.arm(id, now)
		}
		for id := range l.state {
			l.arm(id, now)
		}
		return
	}
	for id := range d.Hosts {
		l.arm(id, now)
	}
}

// heard notes a report from a host.
func (l *liveness) heard(id string, now time.Time) {
	l.ensure()
	if s, ok := l.state[id]; !ok || s != planner.Up {
		l.arm(id, now)
	}
}

func (l *liveness) forget(id string) { delete(l.unreg, id) }

// change is a host whose liveness changed; shards is set when its shards
// must be re-planned: not for a host's first verdict of this term if it is
// up (after Become the patrol's first pass evaluates every shard anyway;
// re-planning them all at once made a new shard wait behind every other
// one).
type change struct {
	host   string
	shards bool
}

// fire judges the hosts whose timers are due and returns those whose
// liveness changed.
func (l *liveness) fire(st *db.State, o *planner.Observed, since, now time.Time) []change {
	l.ensure()
	suspect := time.Duration(st.Config.SuspectTimeoutMs) * time.Millisecond
	dead := time.Duration(st.Config.DeadTimeoutMs) * time.Millisecond
	var changed []change
	for l.timers.Len() > 0 && !l.timers[0].at.After(now) {
		t := heap.Pop(&l.timers).(timer)
		if at, ok := l.armed[t.host]; !ok || !at.Equal(t.at) {
			continue // superseded by an earlier arm
		}
		delete(l.armed, t.host)
		id := t.host
		h := st.Hosts[id]
		prev, known := l.state[id]
		if h == nil {
			if known {
				l.counts[prev]--
				delete(l.state, id)
				delete(l.down, id)
				changed = append(changed, change{id, true})
			}
			if ho := o.Hosts[id]; ho != nil && now.Sub(ho.LastHeard) < suspect {
				l.unreg[id] = struct{}{}
			}
			continue
		}
		delete(l.unreg, id)
		last := since
		if ho := o.Hosts[id]; ho != nil && ho.LastHeard.After(last) {
			last = ho.LastHeard
		}
		cur := planner.Up
		var next time.Time
		switch silence := now.Sub(last); {
		case h.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED || silence >= dead:
			cur = planner.Dead
		case silence >= suspect:
			cur = planner.Suspect
			next = last.Add(dead)
		default:
			next = last.Add(suspect)
		}
		if !next.IsZero() {
			l.arm(id, next)
		}
		if known && prev == cur {
			continue
		}
		if known {
			l.counts[prev]--
		}
		l.counts[cur]++
		l.state[id] = cur
		if cur == planner.Up {
			delete(l.down, id)
		} else {
			l.down[id] = struct{}{}
		}
		changed = append(changed, change{id, known || cur != planner.Up})
	}
	return changed
}

type timer struct {
	at   time.Time
	host string
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}
