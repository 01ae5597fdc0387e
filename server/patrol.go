package server

import (
	"time"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
)

// patrol decides which shards the scheduler evaluates beyond those that
// changed. Two mechanisms keep a round's cost proportional to the work, not
// to the deployment:
//
//   - a host whose liveness crosses a threshold (up, suspect, dead) makes
//     its shards dirty at once, through an index of members by host;
//   - a cursor walks all shards in ID order, a chunk per round, so every
//     shard is looked at within SweepInterval (or longer, when a chunk
//     would exceed maxChunk): this catches the time-based changes that no
//     event announces (a replica missing for too long, a step deadline).
type patrol struct {
	ids        []uint64 // sorted shard IDs
	idSet      map[uint64]bool
	next       int
	hostShards map[string]map[uint64]bool
	shardHosts map[uint64][]string
	liveness   map[string]planner.Liveness
}

// maxChunk bounds the shards a round patrols (about 20ms of planning).
const maxChunk = 2000

func newPatrol() *patrol { return &patrol{} }

// update refreshes the indexes after DB changes.
func (p *patrol) update(st *db.State, d db.Dirty) {
	if p.hostShards == nil || d.All {
		p.hostShards = map[string]map[uint64]bool{}
		p.shardHosts = map[uint64][]string{}
		p.ids = st.SortedShardIDs()
		p.idSet = make(map[uint64]bool, len(p.ids))
		for _, id := range p.ids {
			p.idSet[id] = true
			p.index(st.Shards[id])
		}
		return
	}
	changedSet := false
	for id := range d.Shards {
		p.unindex(id)
		sh, ok := st.Shards[id]
		if ok {
			p.index(sh)
		}
		if ok != p.idSet[id] {
			changedSet = true
		}
	}
	if changedSet {
		p.ids = st.SortedShardIDs()
		p.idSet = make(map[uint64]bool, len(p.ids))
		for _, id := range p.ids {
			p.idSet[id] = true
		}
	}
}

func (p *patrol) index(sh *dbpb.Shard) {
	hosts := make([]string, 0, len(sh.Members))
	for _, m := range sh.Members {
		if p.hostShards[m.HostId] == nil {
			p.hostShards[m.HostId] = map[uint64]bool{}
		}
		p.hostShards[m.HostId][sh.Id] = true
		hosts = append(hosts, m.HostId)
	}
	p.shardHosts[sh.Id] = hosts
}

func (p *patrol) unindex(id uint64) {
	for _, h := range p.shardHosts[id] {
		delete(p.hostShards[h], id)
		if len(p.hostShards[h]) == 0 {
			delete(p.hostShards, h)
		}
	}
	delete(p.shardHosts, id)
}

// transitions marks hosts whose liveness changed since the previous round,
// and their shards, dirty. Callers hold the observations' read lock.
func (p *patrol) transitions(st *db.State, o *planner.Observed, since, now time.Time, shards map[uint64]struct{}, hosts map[string]struct{}) {
	if p.liveness == nil {
		p.liveness = map[string]planner.Liveness{}
	}
	suspect := time.Duration(st.Config.SuspectTimeoutMs) * time.Millisecond
	dead := time.Duration(st.Config.DeadTimeoutMs) * time.Millisecond
	for id, h := range st.Hosts {
		last := since
		if ho := o.Hosts[id]; ho != nil && ho.LastHeard.After(last) {
			last = ho.LastHeard
		}
		l := planner.Up
		switch silence := now.Sub(last); {
		case h.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED || silence >= dead:
			l = planner.Dead
		case silence >= suspect:
			l = planner.Suspect
		}
		if prev, ok := p.liveness[id]; ok && prev == l {
			continue
		}
		p.liveness[id] = l
		hosts[id] = struct{}{}
		for sid := range p.hostShards[id] {
			shards[sid] = struct{}{}
		}
	}
	for id := range p.liveness {
		if _, ok := st.Hosts[id]; !ok {
			delete(p.liveness, id)
		}
	}
}

// chunk adds the next patrol chunk to shards.
func (p *patrol) chunk(tick, sweep time.Duration, shards map[uint64]struct{}) {
	n := len(p.ids)
	if n == 0 {
		return
	}
	size := n
	if sweep > tick {
		size = int(int64(n)*int64(tick)/int64(sweep)) + 1
	}
	size = min(max(size, 64), maxChunk, n)
	for range size {
		if p.next >= n {
			p.next = 0
		}
		shards[p.ids[p.next]] = struct{}{}
		p.next++
	}
}
