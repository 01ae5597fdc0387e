package scheduler

import (
	"maps"
	"slices"
	"time"

	"github.com/google/btree"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/planner"
)

// status caches the latest verdict on every shard the node evaluated, with
// counts by health, so that status calls read what they return instead of
// re-planning the deployment. A verdict is as fresh as the scheduler's own
// view: a shard is re-evaluated whenever its reports, its DB record or its
// hosts' liveness change, and by the patrol.
type status struct {
	verdicts  map[uint64]*planner.ShardReport
	counts    map[string]int
	unhealthy *btree.BTreeG[uint64]
}

func (s *status) init() {
	s.verdicts = map[uint64]*planner.ShardReport{}
	s.counts = map[string]int{}
	s.unhealthy = btree.NewOrderedG[uint64](32)
}

func (s *status) reset() { s.init() }

func (s *status) set(id uint64, r *planner.ShardReport) {
	if old := s.verdicts[id]; old != nil {
		s.counts[old.Health]--
		if s.counts[old.Health] == 0 {
			delete(s.counts, old.Health)
		}
		s.unhealthy.Delete(id)
	}
	if r == nil {
		delete(s.verdicts, id)
		return
	}
	s.verdicts[id] = r
	s.counts[r.Health]++
	if r.Health != "healthy" {
		s.unhealthy.ReplaceOrInsert(id)
	}
}

// record stores a round's verdicts on the shards it evaluated.
func (s *status) record(st *db.State, ids []uint64, reports map[uint64]*planner.ShardReport) {
	for _, id := range ids {
		if st.Shards.Get(id) == nil {
			s.set(id, nil)
		} else if r := reports[id]; r != nil {
			s.set(id, r)
		}
	}
}

// Counts are the shards by health, as last judged.
func (n *Node) Counts() map[string]int { return maps.Clone(n.status.counts) }

// HostCounts are the registered hosts by liveness, as last judged.
func (n *Node) HostCounts() map[string]int {
	out := map[string]int{}
	for l, c := range n.live.counts {
		if c > 0 {
			out[planner.Liveness(l).String()] = c
		}
	}
	return out
}

// HostLiveness is a registered host's liveness as last judged.
func (n *Node) HostLiveness(id string) (planner.Liveness, bool) {
	l, ok := n.live.state[id]
	return l, ok
}

// Verdicts returns the latest verdicts on ids, evaluating (read-only) those
// the node has not judged yet. The cost is that of the ids asked for.
func (n *Node) Verdicts(st *db.State, ids []uint64, now time.Time) map[uint64]*planner.ShardReport {
	out := make(map[uint64]*planner.ShardReport, len(ids))
	var missing []uint64
	for _, id := range ids {
		if r := n.status.verdicts[id]; r != nil && n.active {
			out[id] = r
		} else if st.Shards.Get(id) != nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		o := n.Assess(st, missing, now)
		for _, id := range missing {
			if r := o.Shards[id]; r != nil {
				out[id] = r
				if n.active {
					n.status.set(id, r)
				}
			}
		}
	}
	return out
}

// Assess runs the planner read-only on ids (nothing is proposed, no order
// changes), for explanations.
func (n *Node) Assess(st *db.State, ids []uint64, now time.Time) *planner.Output {
	in := n.input(st, now)
	in.Shards, in.Hosts = slices.Clone(ids), []string{}
	return planner.Plan(in)
}

// AssessHosts runs the planner read-only on hosts.
func (n *Node) AssessHosts(st *db.State, hosts []string, now time.Time) *planner.Output {
	in := n.input(st, now)
	in.Shards, in.Hosts = []uint64{}, slices.Clone(hosts)
	return planner.Plan(in)
}

// DrainCheck refuses a drain that could never finish.
func (n *Node) DrainCheck(st *db.State, hostID string, now time.Time) error {
	return planner.DrainCheck(n.input(st, now), hostID)
}

// input is a planner input over the node's observations, for read-only
// evaluations (rounds add their own seed and what to evaluate).
func (n *Node) input(st *db.State, now time.Time) planner.Input {
	return planner.Input{Now: now, State: st, Obs: n.obs, ObsSince: n.cfg.Started, Epoch: n.epoch, Seed: n.cfg.Salt,
		ShardConfig: n.cfg.ShardConfig, Limits: n.cfg.Limits, ResultAt: n.resultAt}
}

// ShardPage lists up to size shard IDs from from (inclusive) in ID order
// whose latest verdict's health is in health (all shards if health is
// empty; a shard not judged yet counts as pending), the ID to continue
// from (0 at the end) and how many shards match in all. It reads the
// node's ordered indexes, so its cost is that of the page (plus, with a
// filter that includes healthy, the shards it skips).
func (n *Node) ShardPage(from uint64, size int, health map[string]bool) (ids []uint64, next uint64, total int) {
	if n.patrol.ids == nil {
		return nil, 0, 0
	}
	tree := n.patrol.ids
	total = tree.Len()
	if len(health) > 0 {
		total = 0
		judged := 0
		for h, c := range n.status.counts {
			judged += c
			if health[h] {
				total += c
			}
		}
		if health["pending"] {
			total += tree.Len() - judged
		}
		if !health["healthy"] {
			tree = n.status.unhealthy
		}
	}
	tree.AscendGreaterOrEqual(from, func(id uint64) bool {
		if len(health) > 0 {
			h := "pending"
			if r := n.status.verdicts[id]; r != nil {
				h = r.Health
			}
			if !health[h] {
				return true
			}
		}
		if len(ids) == size {
			next = id
			return false
		}
		ids = append(ids, id)
		return true
	})
	return ids, next, total
}

// NumShards is the number of shards in the node's index.
func (n *Node) NumShards() int {
	if n.patrol.ids == nil {
		return 0
	}
	return n.patrol.ids.Len()
}

// NumUnhealthy is the number of shards last judged not healthy.
func (n *Node) NumUnhealthy() int { return n.status.unhealthy.Len() }
