package db

import (
	"cmp"
	"iter"

	"github.com/google/btree"

	"github.com/drummerhq/drummer/internal/dbpb"
)

type hostShard struct {
	host  string
	shard uint64
}

func lessHostShard(a, b hostShard) bool {
	return cmp.Or(cmp.Compare(a.host, b.host), cmp.Compare(a.shard, b.shard)) < 0
}

func lessCleanupKey(a, b CleanupKey) bool {
	return cmp.Or(cmp.Compare(a.HostID, b.HostID), cmp.Compare(a.ShardID, b.ShardID), cmp.Compare(a.ReplicaID, b.ReplicaID)) < 0
}

type addrKey struct{ addr, id string }

func lessAddr(a, b addrKey) bool {
	return cmp.Or(cmp.Compare(a.addr, b.addr), cmp.Compare(a.id, b.id)) < 0
}

// LoadKey orders registered hosts by their member count, then ID.
type LoadKey struct {
	Load int
	ID   string
}

// LessLoad orders LoadKeys.
func LessLoad(a, b LoadKey) bool {
	return cmp.Or(cmp.Compare(a.Load, b.Load), cmp.Compare(a.ID, b.ID)) < 0
}

// setMembers records a host's member count, keeping the load index.
func (s *State) setMembers(hostID string, n int) {
	old := s.hostMembers[hostID]
	if n <= 0 {
		delete(s.hostMembers, hostID)
		n = 0
	} else {
		s.hostMembers[hostID] = n
	}
	s.members += n - old
	if h, ok := s.Hosts[hostID]; ok && old != n {
		s.byLoad.Delete(LoadKey{old, hostID})
		s.byLoad.ReplaceOrInsert(LoadKey{n, hostID})
		if placeable(h) {
			s.addPool(h, 0, n-old)
		}
	}
}

// Pool counts the active hosts of one region (all regions: "") and the
// replicas they hold, for balancing's fair shares.
type Pool struct{ Hosts, Members int }

// PoolOf returns the pool of active hosts in a region, or of all active
// hosts for "" ; O(1).
func (s *State) PoolOf(region string) Pool {
	if region == "" {
		return s.pools[allRegions]
	}
	return s.pools[region]
}

// allRegions keys the pool of every active host; it cannot be a region
// label (labels are validated as printable).
const allRegions = "\x00all"

// Members is the number of member records; Membered the number of shards
// with at least one.
func (s *State) Members() (members, membered int) { return s.members, s.membered }

func (s *State) addPool(h *dbpb.Host, hosts, members int) {
	for _, k := range []string{allRegions, h.Labels[RegionLabel]} {
		if k == "" {
			continue
		}
		p := s.pools[k]
		p.Hosts += hosts
		p.Members += members
		if p == (Pool{}) {
			delete(s.pools, k)
		} else {
			s.pools[k] = p
		}
	}
}

// putHost stores a host record and keeps the indexes.
func (s *State) putHost(h *dbpb.Host) {
	if old := s.Hosts[h.Id]; old != nil {
		s.byAddr.Delete(addrKey{old.RaftAddress, old.Id})
		s.sums.hosts -= recordHash(tagHost, old)
		if placeable(old) {
			s.addPool(old, -1, -s.hostMembers[h.Id])
		}
	}
	if placeable(h) {
		s.addPool(h, 1, s.hostMembers[h.Id])
	}
	s.Hosts[h.Id] = h
	s.sums.hosts += recordHash(tagHost, h)
	s.byAddr.ReplaceOrInsert(addrKey{h.RaftAddress, h.Id})
	s.byLoad.ReplaceOrInsert(LoadKey{s.hostMembers[h.Id], h.Id})
}

// dropHost removes a host record and keeps the indexes.
func (s *State) dropHost(id string) {
	if old := s.Hosts[id]; old != nil {
		s.byAddr.Delete(addrKey{old.RaftAddress, old.Id})
		s.byLoad.Delete(LoadKey{s.hostMembers[id], id})
		s.sums.hosts -= recordHash(tagHost, old)
		if placeable(old) {
			s.addPool(old, -1, -s.hostMembers[id])
		}
		delete(s.Hosts, id)
	}
}

func (s *State) putCleanup(c *dbpb.Cleanup) {
	k := CleanupKey{HostID: c.HostId, ShardID: c.ShardId, ReplicaID: c.ReplicaId}
	if old := s.Cleanups[k]; old != nil {
		s.sums.cleanups -= recordHash(tagCleanup, old)
	}
	s.Cleanups[k] = c
	s.sums.cleanups += recordHash(tagCleanup, c)
	s.cleanupIdx.ReplaceOrInsert(k)
}

func (s *State) dropCleanup(k CleanupKey) {
	if old := s.Cleanups[k]; old != nil {
		s.sums.cleanups -= recordHash(tagCleanup, old)
	}
	delete(s.Cleanups, k)
	s.cleanupIdx.Delete(k)
}

// ShardsOnHost yields the IDs of the shards with a member record on a host,
// in increasing order; O(log + the host's shards).
func (s *State) ShardsOnHost(hostID string) iter.Seq[uint64] {
	return func(yield func(uint64) bool) {
		s.hostShards.AscendGreaterOrEqual(hostShard{host: hostID}, func(k hostShard) bool {
			return k.host == hostID && yield(k.shard)
		})
	}
}

// LoadIndex is a private, mutable copy of the registered hosts ordered by
// member count, for a planning round to place replicas from (it adjusts
// the loads as it plans). Taking one is O(1) (copy on write); it must be
// taken by one goroutine at a time per State.
type LoadIndex struct{ t *btree.BTreeG[LoadKey] }

// LoadIndex returns a copy of the load index.
func (s *State) LoadIndex() LoadIndex { return LoadIndex{t: s.byLoad.Clone()} }

// Move changes a host's load in the copy.
func (x LoadIndex) Move(id string, from, to int) {
	if _, ok := x.t.Delete(LoadKey{from, id}); ok {
		x.t.ReplaceOrInsert(LoadKey{to, id})
	}
}

// Ascend yields hosts from the least loaded.
func (x LoadIndex) Ascend(f func(id string, load int) bool) {
	x.t.Ascend(func(k LoadKey) bool { return f(k.ID, k.Load) })
}

// CheckIndexes verifies the derived indexes against the records (for
// tests and fuzzing): it returns a description of the first mismatch.
func (s *State) CheckIndexes() string {
	members := map[string]int{}
	pairs := 0
	for id, sh := range s.Shards.All() {
		for _, m := range sh.Members {
			members[m.HostId]++
			pairs++
			if !s.hostShards.Has(hostShard{m.HostId, id}) {
				return "hostShards misses a member"
			}
		}
	}
	if pairs != s.hostShards.Len() {
		return "hostShards has extra entries"
	}
	for h, n := range members {
		if s.hostMembers[h] != n {
			return "hostMembers count wrong for " + h
		}
	}
	if len(members) != len(s.hostMembers) {
		return "hostMembers has extra hosts"
	}
	if s.cleanupIdx.Len() != len(s.Cleanups) {
		return "cleanup index size differs"
	}
	for k := range s.Cleanups {
		if !s.cleanupIdx.Has(k) {
			return "cleanup index misses a key"
		}
	}
	if pairs != s.members {
		return "member total wrong"
	}
	membered := 0
	for _, sh := range s.Shards.All() {
		if len(sh.Members) > 0 {
			membered++
		}
	}
	if membered != s.membered {
		return "membered shard count wrong"
	}
	pools := map[string]Pool{}
	for id, h := range s.Hosts {
		if !placeable(h) {
			continue
		}
		for _, k := range []string{allRegions, h.Labels[RegionLabel]} {
			if k != "" {
				p := pools[k]
				p.Hosts++
				p.Members += s.hostMembers[id]
				pools[k] = p
			}
		}
	}
	if len(pools) != len(s.pools) {
		return "pool count wrong"
	}
	for k, p := range pools {
		if s.pools[k] != p {
			return "pool wrong for region " + k
		}
	}
	if s.byLoad.Len() != len(s.Hosts) || s.byAddr.Len() != len(s.Hosts) {
		return "host indexes size differs"
	}
	for id, h := range s.Hosts {
		if !s.byLoad.Has(LoadKey{s.hostMembers[id], id}) {
			return "load index wrong for " + id
		}
		if !s.byAddr.Has(addrKey{h.RaftAddress, id}) {
			return "address index misses " + id
		}
	}
	if s.computeSums() != s.sums {
		return "record hash sums differ from the records"
	}
	return ""
}

// HostsFrom yields registered hosts in raft address order from addr
// (inclusive), for paging; O(log hosts) to start.
func (s *State) HostsFrom(addr string) iter.Seq[*dbpb.Host] {
	return func(yield func(*dbpb.Host) bool) {
		s.byAddr.AscendGreaterOrEqual(addrKey{addr: addr}, func(k addrKey) bool {
			return yield(s.Hosts[k.id])
		})
	}
}

// LoadRange returns the smallest and largest member count of the
// registered hosts; O(log hosts).
func (s *State) LoadRange() (least, most int) {
	if k, ok := s.byLoad.Min(); ok {
		least = k.Load
	}
	if k, ok := s.byLoad.Max(); ok {
		most = k.Load
	}
	return least, most
}

// MostLoaded yields registered hosts from the most loaded; O(log hosts)
// to start.
func (s *State) MostLoaded() iter.Seq2[string, int] {
	return func(yield func(string, int) bool) {
		s.byLoad.Descend(func(k LoadKey) bool { return yield(k.ID, k.Load) })
	}
}

// ShardsOnHostFrom is ShardsOnHost from shard ID from (inclusive).
func (s *State) ShardsOnHostFrom(hostID string, from uint64) iter.Seq[uint64] {
	return func(yield func(uint64) bool) {
		s.hostShards.AscendGreaterOrEqual(hostShard{host: hostID, shard: from}, func(k hostShard) bool {
			return k.host == hostID && yield(k.shard)
		})
	}
}
