// Package db is the Drummer DB: the durable, Raft-replicated record of shards,
// replica assignments, hosts, repairs in flight, cleanups, drummer members,
// the scheduler epoch, runtime configuration and a small KV map.
//
// State.Apply is a pure function of (state, command bytes): it validates every
// command and answers bad ones with a result code instead of panicking, never
// reads a clock (times come from the proposer), and leaves no trace of a
// rejected command. Records stored in the maps are immutable once inserted;
// apply replaces them with modified copies, so a View taken under the DB lock
// can be read without locks while apply continues.
//
// Sizes are bounded: deleted shards leave only cleanup entries (one per
// replica, dropped when the host confirms or is forgotten), dead hosts are
// forgotten once they hold nothing, and repair history is a fixed-size ring.
package db

import (
	"slices"

	"github.com/google/btree"
	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/internal/dbpb"
)

// SnapshotVersion is the version of the snapshot encoding.
const SnapshotVersion = 1

// CommandVersion is the only command version this build applies.
const CommandVersion = 1

// RecentRepairs is how many finished repairs are remembered.
const RecentRepairs = 128

// Limits on command contents; generous, but they keep a single command from
// growing the DB without bound.
const (
	MaxShardsPerCommand = 100_000
	MaxReplicas         = 9
	MaxNameLen          = 128
	MaxLabels           = 32
	MaxKVKeyLen         = 256
	MaxKVValueLen       = 64 << 10
	MaxKVEntries        = 10_000
	MaxApps             = 64
	MaxDecisions        = 100_000
)

// CleanupKey identifies a replica to stop and delete on a host.
type CleanupKey struct {
	HostID    string
	ShardID   uint64
	ReplicaID uint64
}

// State is the DB contents. The zero value is not usable; call New.
type State struct {
	DeploymentID   uint64
	Epoch          uint64
	EpochHolder    uint64
	Launched       bool
	Regions        map[string]uint32
	NextRepairID   uint64
	ReplicaIDFloor uint64
	Config         *dbpb.Config

	Shards   ShardTable // copy-on-write (table.go)
	Hosts    map[string]*dbpb.Host
	Cleanups map[CleanupKey]*dbpb.Cleanup
	Drummers map[uint64]*dbpb.Drummer
	KV       map[string]*dbpb.KVRecord
	Recent   []*dbpb.FinishedRepair // oldest first, at most RecentRepairs

	// Derived indexes, kept by putShard and deleteShard (not replicated,
	// rebuilt on recovery). They are small (hosts and repairs, not shards),
	// so copying them with a view is cheap, and they spare the scheduler a
	// scan of every shard each round.
	hostMembers map[string]int  // member records per host
	members     int             // member records in all
	membered    int             // shards with at least one member record
	pools       map[string]Pool // active hosts and their members, by region
	repairsTo   map[string]int  // repairs in flight adding a replica on a host
	repairing   map[uint64]bool // shards with a repair in flight
	// Ordered indexes on copy-on-write B-trees (Clone is O(1)), for the
	// lookups that would otherwise scan every shard, cleanup or host: the
	// shards with a member on a host, the cleanups of a host, registered
	// hosts by (load, ID) for placement, and hosts by raft address.
	hostShards *btree.BTreeG[hostShard]
	cleanupIdx *btree.BTreeG[CleanupKey]
	byLoad     *btree.BTreeG[LoadKey]
	byAddr     *btree.BTreeG[addrKey]

	// sums hash every table's records, for Hash (hash.go); kept by the
	// put and drop functions, not replicated.
	sums recordSums

	// Not replicated: which records changed since the last TakeDirty, so the
	// scheduler re-plans only what changed.
	dirty Dirty

	// drops counts the shards deleted and the shard updates that dropped a
	// member record, since lineage was made (New; clones share it): the
	// soft state kept per shard or replica needs pruning only when it moved.
	drops   uint64
	lineage *tableToken
}

// PruneMark identifies how far a State has dropped shards and member
// records: while it is unchanged, nothing was deleted that soft state
// kept per shard or replica could refer to.
type PruneMark struct {
	lineage *tableToken
	drops   uint64
}

// PruneMark returns the state's mark (see PruneMark).
func (s *State) PruneMark() PruneMark { return PruneMark{s.lineage, s.drops} }

// Dirty lists records changed by applied commands.
type Dirty struct {
	Shards map[uint64]struct{}
	Hosts  map[string]struct{}
	// All is set when everything must be considered changed (snapshot
	// recovery, configuration change).
	All bool
}

// DefaultConfig returns the runtime configuration a new DB starts with.
func DefaultConfig() *dbpb.Config {
	return &dbpb.Config{
		ReportIntervalMs:     1000,
		SuspectTimeoutMs:     5000,
		DeadTimeoutMs:        30000,
		MaxConcurrentRepairs: 4096,
		MaxRepairsPerHost:    8,
		HostGcAfterMs:        24 * 3600 * 1000,
	}
}

// New returns an empty DB.
func New() *State {
	return &State{
		Regions:        map[string]uint32{},
		NextRepairID:   1,
		ReplicaIDFloor: 1,
		Config:         DefaultConfig(),
		Shards:         newShardTable(),
		Hosts:          map[string]*dbpb.Host{},
		Cleanups:       map[CleanupKey]*dbpb.Cleanup{},
		Drummers:       map[uint64]*dbpb.Drummer{},
		KV:             map[string]*dbpb.KVRecord{},
		dirty:          newDirty(),
		lineage:        &tableToken{},
		hostMembers:    map[string]int{},
		pools:          map[string]Pool{},
		repairsTo:      map[string]int{},
		repairing:      map[uint64]bool{},
		hostShards:     btree.NewG(32, lessHostShard),
		cleanupIdx:     btree.NewG(32, lessCleanupKey),
		byLoad:         btree.NewG(32, LessLoad),
		byAddr:         btree.NewG(32, lessAddr),
	}
}

func newDirty() Dirty {
	return Dirty{Shards: map[uint64]struct{}{}, Hosts: map[string]struct{}{}}
}

// Clone returns a copy that shares the (immutable) records but not the maps,
// so it can be read while the original keeps applying commands. The shard
// table and the B-tree indexes are copy-on-write, so Clone costs
// O(hosts + shards/256), and it writes to s (their copy-on-write marks):
// clones of one State must not run concurrently.
func (s *State) Clone() *State {
	c := *s
	c.Regions = cloneMap(s.Regions)
	c.Shards = s.Shards.clone()
	c.Hosts = cloneMap(s.Hosts)
	c.Cleanups = cloneMap(s.Cleanups)
	c.Drummers = cloneMap(s.Drummers)
	c.KV = cloneMap(s.KV)
	c.Recent = slices.Clone(s.Recent)
	c.hostMembers = cloneMap(s.hostMembers)
	c.pools = cloneMap(s.pools)
	c.repairsTo = cloneMap(s.repairsTo)
	c.repairing = cloneMap(s.repairing)
	c.hostShards = s.hostShards.Clone()
	c.cleanupIdx = s.cleanupIdx.Clone()
	c.byLoad = s.byLoad.Clone()
	c.byAddr = s.byAddr.Clone()
	c.dirty = newDirty()
	return &c
}

// putShard stores a shard record and keeps the derived indexes.
func (s *State) putShard(sh *dbpb.Shard) {
	old := s.Shards.Get(sh.Id)
	// Most updates (bootstrap marks, repair steps, failures) leave the
	// members as they are: their index entries stay, which halves what
	// apply costs on every replica during a launch.
	same := old != nil && sameMembers(old.Members, sh.Members)
	if old != nil {
		if same {
			s.unindexRepair(old)
		} else {
			s.unindex(old)
			if droppedMember(old.Members, sh.Members) {
				s.drops++
			}
		}
		s.sums.shards -= recordHash(tagShard, old)
	}
	s.Shards.put(sh)
	s.sums.shards += recordHash(tagShard, sh)
	if !same {
		s.indexMembers(sh)
	}
	if r := sh.Repair; r != nil {
		s.repairing[sh.Id] = true
		if r.NewHostId != "" {
			s.repairsTo[r.NewHostId]++
		}
	}
}

// deleteShard removes a shard record and keeps the derived indexes.
func (s *State) deleteShard(id uint64) {
	if old := s.Shards.Get(id); old != nil {
		s.unindex(old)
		s.sums.shards -= recordHash(tagShard, old)
		s.Shards.remove(id)
		s.drops++
	}
}

// droppedMember tells whether a member of old is missing from now.
func droppedMember(old, now []*dbpb.Replica) bool {
	for _, m := range old {
		if !slices.ContainsFunc(now, func(n *dbpb.Replica) bool { return n.ReplicaId == m.ReplicaId }) {
			return true
		}
	}
	return false
}

// indexMembers adds a stored shard's members to the member indexes.
func (s *State) indexMembers(sh *dbpb.Shard) {
	if len(sh.Members) > 0 {
		s.membered++
	}
	for _, m := range sh.Members {
		s.setMembers(m.HostId, s.hostMembers[m.HostId]+1)
		s.hostShards.ReplaceOrInsert(hostShard{m.HostId, sh.Id})
	}
}

// sameMembers reports whether two member lists are equal, record by record
// (apply copies a shard with proto.CloneOf, so equal means equal values).
func sameMembers(a, b []*dbpb.Replica) bool {
	return slices.EqualFunc(a, b, func(x, y *dbpb.Replica) bool { return x == y || proto.Equal(x, y) })
}

func (s *State) unindex(sh *dbpb.Shard) {
	if len(sh.Members) > 0 {
		s.membered--
	}
	for _, m := range sh.Members {
		s.setMembers(m.HostId, s.hostMembers[m.HostId]-1)
		s.hostShards.Delete(hostShard{m.HostId, sh.Id})
	}
	s.unindexRepair(sh)
}

// unindexRepair removes a shard's repair from the repair indexes.
func (s *State) unindexRepair(sh *dbpb.Shard) {
	if r := sh.Repair; r != nil {
		delete(s.repairing, sh.Id)
		if r.NewHostId != "" {
			if s.repairsTo[r.NewHostId]--; s.repairsTo[r.NewHostId] <= 0 {
				delete(s.repairsTo, r.NewHostId)
			}
		}
	}
}

// HostMembers is the number of member records on a host.
func (s *State) HostMembers(hostID string) int { return s.hostMembers[hostID] }

// RepairsTo is the number of repairs in flight adding a replica on a host.
func (s *State) RepairsTo(hostID string) int { return s.repairsTo[hostID] }

// RepairingShards lists the shards with a repair in flight, sorted.
func (s *State) RepairingShards() []uint64 {
	ids := make([]uint64, 0, len(s.repairing))
	for id := range s.repairing {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// TakeDirty returns what changed since the previous call and resets it.
func (s *State) TakeDirty() Dirty {
	d := s.dirty
	s.dirty = newDirty()
	return d
}

func (s *State) touchShard(id uint64) { s.dirty.Shards[id] = struct{}{} }
func (s *State) touchHost(id string)  { s.dirty.Hosts[id] = struct{}{} }

// SortedShardIDs returns every shard ID in increasing order.
func (s *State) SortedShardIDs() []uint64 {
	return slices.Collect(s.Shards.IDs())
}

// SortedHostIDs returns every host ID in increasing order.
func (s *State) SortedHostIDs() []string {
	ids := make([]string, 0, len(s.Hosts))
	for id := range s.Hosts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// HostByRaftAddress finds the registered host that owns addr: the one not
// replaced, else the replaced one with the smallest ID. O(log hosts).
func (s *State) HostByRaftAddress(addr string) *dbpb.Host {
	var replaced *dbpb.Host
	s.byAddr.AscendGreaterOrEqual(addrKey{addr: addr}, func(k addrKey) bool {
		if k.addr != addr {
			return false
		}
		h := s.Hosts[k.id]
		if h.Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED {
			replaced = h
			return false
		}
		if replaced == nil {
			replaced = h // the smallest ID comes first
		}
		return true
	})
	return replaced
}

// CleanupsFor returns the cleanups recorded for a host, sorted by shard
// and replica. O(log cleanups + the host's).
func (s *State) CleanupsFor(hostID string) []*dbpb.Cleanup {
	var out []*dbpb.Cleanup
	s.cleanupIdx.AscendGreaterOrEqual(CleanupKey{HostID: hostID}, func(k CleanupKey) bool {
		if k.HostID != hostID {
			return false
		}
		out = append(out, s.Cleanups[k])
		return true
	})
	return out
}

// Member returns the member record of a shard, or nil.
func Member(sh *dbpb.Shard, replicaID uint64) *dbpb.Replica {
	for _, m := range sh.Members {
		if m.ReplicaId == replicaID {
			return m
		}
	}
	return nil
}

// MemberOnHost returns the shard's member placed on hostID, or nil.
func MemberOnHost(sh *dbpb.Shard, hostID string) *dbpb.Replica {
	for _, m := range sh.Members {
		if m.HostId == hostID {
			return m
		}
	}
	return nil
}

// Voters counts the shard's voting members.
func Voters(sh *dbpb.Shard) int {
	n := 0
	for _, m := range sh.Members {
		if m.Role == dbpb.Role_ROLE_VOTER {
			n++
		}
	}
	return n
}

// Quorum is the number of voters needed for a majority of n.
func Quorum(n int) int { return n/2 + 1 }

// ShardTimeouts returns the liveness timeouts in force for a shard.
func (s *State) ShardTimeouts(shardID uint64) (suspectMs, deadMs uint64) {
	suspectMs, deadMs = s.Config.SuspectTimeoutMs, s.Config.DeadTimeoutMs
	if o, ok := s.Config.ShardOverrides[shardID]; ok {
		if o.SuspectTimeoutMs != 0 {
			suspectMs = o.SuspectTimeoutMs
		}
		if o.DeadTimeoutMs != 0 {
			deadMs = o.DeadTimeoutMs
		}
	}
	return suspectMs, deadMs
}

// RepairSteps lists the steps of a repair kind, in order.
func RepairSteps(kind dbpb.RepairKind) []dbpb.RepairStep {
	switch kind {
	case dbpb.RepairKind_REPAIR_KIND_REPLACE, dbpb.RepairKind_REPAIR_KIND_MOVE, dbpb.RepairKind_REPAIR_KIND_BALANCE:
		return []dbpb.RepairStep{
			dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING,
			dbpb.RepairStep_REPAIR_STEP_START,
			dbpb.RepairStep_REPAIR_STEP_CATCH_UP,
			dbpb.RepairStep_REPAIR_STEP_PROMOTE,
			dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD,
		}
	case dbpb.RepairKind_REPAIR_KIND_ADD:
		return []dbpb.RepairStep{
			dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING,
			dbpb.RepairStep_REPAIR_STEP_START,
			dbpb.RepairStep_REPAIR_STEP_CATCH_UP,
			dbpb.RepairStep_REPAIR_STEP_PROMOTE,
		}
	case dbpb.RepairKind_REPAIR_KIND_REMOVE:
		return []dbpb.RepairStep{dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD}
	}
	return nil
}

// NextStep returns the step after cur for kind, or UNSPECIFIED when cur is
// the last one.
func NextStep(kind dbpb.RepairKind, cur dbpb.RepairStep) dbpb.RepairStep {
	steps := RepairSteps(kind)
	for i, st := range steps {
		if st == cur && i+1 < len(steps) {
			return steps[i+1]
		}
	}
	return dbpb.RepairStep_REPAIR_STEP_UNSPECIFIED
}

// StepIndex returns the 1-based position of step in kind's list, and the
// list's length; a rollback counts as one extra step at the end.
func StepIndex(kind dbpb.RepairKind, step dbpb.RepairStep) (int, int) {
	steps := RepairSteps(kind)
	if step == dbpb.RepairStep_REPAIR_STEP_ROLLBACK {
		return len(steps) + 1, len(steps) + 1
	}
	for i, st := range steps {
		if st == step {
			return i + 1, len(steps)
		}
	}
	return 0, len(steps)
}

// TargetLostDelay is how long a shard waits (in ms) before another repair
// after one failed only because its target host was lost.
const TargetLostDelay = 2000

// Backoff is how long a shard waits (in ms) before another repair after n
// consecutive failures.
func Backoff(failures uint32) int64 {
	if failures == 0 {
		return 0
	}
	ms := int64(5000)
	for i := uint32(1); i < failures && ms < 300_000; i++ {
		ms *= 2
	}
	return min(ms, 300_000)
}
