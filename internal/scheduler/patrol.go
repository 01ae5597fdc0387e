package scheduler

import (
	"time"

	"github.com/google/btree"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// patrol decides which shards and hosts a round evaluates beyond those
// that changed. It keeps an index of members by host (so a host's liveness
// transition makes its shards dirty at once) and two cursors that walk all
// shards and all hosts in ID order, a chunk per round, to catch the
// time-based changes no event announces (a replica missing for too long,
// a host silent for host_gc_after). A chunk is sized to visit everything
// within Config.Sweep, but never more than Config.PatrolPerSecond shards
// per second.
type patrol struct {
	built      bool
	ids        *btree.BTreeG[uint64]
	hosts      *btree.BTreeG[string]
	hostShards map[string]map[uint64]struct{}
	shardHosts map[uint64][]string
	nextShard  uint64
	nextHost   string
	last       time.Time
	credit     float64
	hostCredit float64
	// warm is set once the first pass after Become has visited every
	// shard that existed then (firstLeft counts those still to visit):
	// until then the patrol runs at half a round's capacity, so a new
	// leader knows every shard's verdict within seconds. Shards created
	// later come with their DB marks and do not extend the first pass: a
	// leader that started before a 333,334-shard fleet was defined spent
	// its launch patrolling all of it at 10,000 a round, and every round
	// of the launch was full (sweep behind the placements).
	warm      bool
	firstLeft int
}

func (p *patrol) reset() { *p = patrol{} }

// update refreshes the indexes after DB changes: O(changed), or O(DB) when
// the DB says everything changed (snapshot recovery) or on the first round.
func (p *patrol) update(st *db.State, d db.Dirty) {
	if !p.built || d.All {
		p.built = true
		p.ids = btree.NewOrderedG[uint64](32)
		p.hosts = btree.NewOrderedG[string](32)
		p.hostShards = map[string]map[uint64]struct{}{}
		p.shardHosts = map[uint64][]string{}
		for id, sh := range st.Shards.All() {
			p.ids.ReplaceOrInsert(id)
			p.index(sh)
		}
		for id := range st.Hosts {
			p.hosts.ReplaceOrInsert(id)
		}
		if !p.warm {
			p.firstLeft = p.ids.Len()
			p.warm = p.firstLeft == 0
		}
		return
	}
	for id := range d.Shards {
		p.unindex(id)
		if sh, ok := st.Shards.Lookup(id); ok {
			p.ids.ReplaceOrInsert(id)
			p.index(sh)
		} else {
			p.ids.Delete(id)
		}
	}
	for id := range d.Hosts {
		if _, ok := st.Hosts[id]; ok {
			p.hosts.ReplaceOrInsert(id)
		} else {
			p.hosts.Delete(id)
		}
	}
}

func (p *patrol) index(sh *dbpb.Shard) {
	hosts := make([]string, 0, len(sh.Members))
	for _, m := range sh.Members {
		set := p.hostShards[m.HostId]
		if set == nil {
			set = map[uint64]struct{}{}
			p.hostShards[m.HostId] = set
		}
		set[sh.Id] = struct{}{}
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

// chunk adds the next shards and hosts of the walk.
func (p *patrol) chunk(st *db.State, now time.Time, cfg Config, shards map[uint64]struct{}, hosts map[string]struct{}) {
	if cfg.PatrolPerSecond < 0 {
		return
	}
	elapsed := cfg.Tick
	if !p.last.IsZero() {
		elapsed = min(now.Sub(p.last), cfg.Sweep)
	}
	p.last = now
	frac := float64(elapsed) / float64(cfg.Sweep)
	// Shards: the whole set per Sweep, at most PatrolPerSecond per second.
	want := float64(p.ids.Len())*frac + 1
	want = min(want, float64(cfg.PatrolPerSecond)*elapsed.Seconds()+1)
	p.credit += want
	n := int(p.credit)
	p.credit -= float64(n)
	if !p.warm {
		n = min(max(n, cfg.MaxShardsPerRound/2), p.firstLeft)
		p.firstLeft -= n
		p.warm = p.firstLeft <= 0
	}
	n = min(n, p.ids.Len())
	for n > 0 {
		p.ids.AscendGreaterOrEqual(p.nextShard, func(id uint64) bool {
			shards[id] = struct{}{}
			p.nextShard = id + 1
			n--
			return n > 0
		})
		if n > 0 {
			p.nextShard = 0 // wrapped
			if !p.warm {
				p.warm = true
				break // the first pass is done
			}
		}
	}
	// Hosts: the whole set per Sweep, at most PatrolHostsPerSecond per
	// second (the planner's per-host work reads the host's replicas).
	hwant := float64(p.hosts.Len())*frac + 1
	if cfg.PatrolHostsPerSecond > 0 {
		hwant = min(hwant, float64(cfg.PatrolHostsPerSecond)*elapsed.Seconds()+1)
	}
	p.hostCredit += hwant
	m := int(p.hostCredit)
	p.hostCredit -= float64(m)
	m = min(m, p.hosts.Len())
	for m > 0 {
		p.hosts.AscendGreaterOrEqual(p.nextHost, func(id string) bool {
			hosts[id] = struct{}{}
			p.nextHost = id + "\x00"
			m--
			return m > 0
		})
		if m > 0 {
			p.nextHost = ""
		}
	}
}
