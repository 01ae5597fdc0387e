// Package planner is Drummer's scheduling brain: a pure, deterministic
// function from (desired state, observed state, now) to actions.
//
// Desired state is the Drummer DB (db.State). Observed state is what the
// nodehosts report (soft state, never written through Raft). The output is
// a list of DB decisions, to be proposed under the scheduler epoch, and
// orders for nodehosts, delivered in heartbeat replies. The planner reads a
// clock only through Input.Now and draws randomness only from Input.Seed, so
// the server, the tests and the simulator run exactly the same logic and a
// failing simulation replays from its seed.
package planner

import (
	"maps"
	"slices"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// ReplicaKey identifies a replica.
type ReplicaKey struct {
	ShardID   uint64
	ReplicaID uint64
}

// HostObs is what the scheduler knows about a nodehost from its reports.
type HostObs struct {
	ID          string
	RaftAddress string
	APIAddress  string
	Labels      map[string]string
	Apps        []string
	// LastHeard is when the last report arrived; zero if never. A driver
	// may note an arrival before the report is taken (scheduler.Node.Heard).
	LastHeard time.Time
	// LastTaken is when the last report taken arrived (LastHeard without
	// the arrivals only noted): the scheduler's test for a host coming
	// back from silence.
	LastTaken time.Time
	// ReplicasAt is when the last report whose replicas were recorded
	// arrived (a full report, or a delta in sequence): Replicas is the
	// host's truth as of then. A replica it does not list has been missing
	// only that long, however much later the host is heard from.
	ReplicasAt time.Time
	// Replicas running on the host, by shard ID (dragonboat runs at most one
	// replica of a shard per host). Change it with SetReplica, DropReplica
	// and SetReplicas, which keep Leading.
	Replicas map[uint64]*drummerpb.ReplicaReport
	// Leading counts the replicas in Replicas that say they lead their
	// shard, for leader balancing.
	Leading int
	// Disk is the replica inventory of the host's LogDB, when known.
	DiskKnown bool
	DiskAt    time.Time
	Disk      map[ReplicaKey]struct{}
	// Results of orders the host executed recently, by order ID.
	Results map[string]*drummerpb.OrderResult
	// Starting is set while the host is still starting replicas (restoring
	// after a restart, or working through start orders).
	Starting bool
}

// leads tells whether a reported replica says it is its shard's leader.
func leads(r *drummerpb.ReplicaReport) bool {
	return r != nil && !r.Pending && r.LeaderId != 0 && r.LeaderId == r.ReplicaId
}

// SetReplica records a reported replica.
func (h *HostObs) SetReplica(r *drummerpb.ReplicaReport) {
	if leads(h.Replicas[r.ShardId]) {
		h.Leading--
	}
	h.Replicas[r.ShardId] = r
	if leads(r) {
		h.Leading++
	}
}

// DropReplica forgets the replica of a shard.
func (h *HostObs) DropReplica(shardID uint64) {
	if leads(h.Replicas[shardID]) {
		h.Leading--
	}
	delete(h.Replicas, shardID)
}

// SetReplicas replaces every replica (a full report).
func (h *HostObs) SetReplicas(m map[uint64]*drummerpb.ReplicaReport) {
	h.Replicas, h.Leading = m, 0
	for _, r := range m {
		if leads(r) {
			h.Leading++
		}
	}
}

// Observed is the soft state: the scheduler's view of the fleet.
type Observed struct {
	Hosts map[string]*HostObs
	// Memberships holds, per shard, the membership with the highest
	// ConfigChangeID any replica or order result reported.
	// Memberships is unchecked: anything a host with a valid certificate
	// sends. The planner uses Claims, through its trust rules.
	Memberships map[uint64]*drummerpb.Membership
	// Claims holds, per shard and reporting host, the memberships that
	// host claimed (AddClaim).
	Claims map[uint64]map[string]*HostClaims
	// LastRunning is when a replica was last reported running.
	LastRunning map[ReplicaKey]time.Time
}

// EqualMembership is proto.Equal for memberships without reflection
// (on full reports, which repeat every leader's membership, proto.Equal
// was 70 % of taking the report).
func EqualMembership(a, b *drummerpb.Membership) bool {
	if a == b {
		return true
	}
	return a.ConfigChangeId == b.ConfigChangeId && maps.Equal(a.Voters, b.Voters) && maps.Equal(a.NonVoting, b.NonVoting) &&
		maps.Equal(a.Witnesses, b.Witnesses) && slices.Equal(a.Removed, b.Removed) &&
		len(a.ProtoReflect().GetUnknown()) == 0 && len(b.ProtoReflect().GetUnknown()) == 0
}

// NewerMembership tells whether a reported membership m should replace
// the one kept for its shard (old, may be nil). Within one incarnation of a
// shard the higher ConfigChangeID wins. A shard ID deleted and created
// again is a new Raft group whose log, and so ConfigChangeID, starts over,
// while its replica IDs are all above those of every earlier incarnation
// (the DB's replica ID floor): so a membership whose IDs are all above the
// kept one's is newer, and one whose IDs are all below is older, whatever
// their ConfigChangeIDs.
func NewerMembership(m, old *drummerpb.Membership) bool {
	if m == nil {
		return false
	}
	if old == nil {
		return true
	}
	mlo, mhi, ok1 := idRange(m)
	olo, ohi, ok2 := idRange(old)
	switch {
	case !ok1:
		return false
	case !ok2 || mlo > ohi:
		return true
	case mhi < olo:
		return false
	}
	return m.ConfigChangeId > old.ConfigChangeId
}

func idRange(m *drummerpb.Membership) (lo, hi uint64, ok bool) {
	for _, ids := range []map[uint64]string{m.Voters, m.NonVoting, m.Witnesses} {
		for id := range ids {
			if !ok || id < lo {
				lo = id
			}
			if !ok || id > hi {
				hi = id
			}
			ok = true
		}
	}
	return lo, hi, ok
}

// NewObserved returns an empty Observed.
func NewObserved() *Observed {
	return &Observed{
		Hosts:       map[string]*HostObs{},
		Memberships: map[uint64]*drummerpb.Membership{},
		Claims:      map[uint64]map[string]*HostClaims{},
		LastRunning: map[ReplicaKey]time.Time{},
	}
}

// ShardConfig is the Raft configuration given to every shard's replicas.
type ShardConfig = drummerpb.ShardConfig

// DefaultShardConfig is used when Input.ShardConfig is nil. PreVote and
// CheckQuorum keep a stranded or restarted replica from disturbing its shard;
// ElectionRTT 10 ticks gives a 1-2 s failover with 100 ms ticks.
func DefaultShardConfig() *ShardConfig {
	return &ShardConfig{
		ElectionRtt:        10,
		HeartbeatRtt:       1,
		SnapshotEntries:    10000,
		CompactionOverhead: 5000,
		CheckQuorum:        true,
		PreVote:            true,
	}
}

// Limits bound the work started per round (the DB's runtime configuration
// bounds the work in flight).
type Limits struct {
	// Initial placements per round.
	MaxPlacements int
	// New repairs per round.
	MaxNewRepairs int
	// Cleanup (zombie) decisions per round.
	MaxCleanups int
	// Orders per host per round (start and stop orders; config changes are
	// never held back).
	MaxOrdersPerHost int
}

// DefaultLimits are the per-round limits used when Input.Limits is zero.
func DefaultLimits() Limits {
	return Limits{MaxPlacements: 512, MaxNewRepairs: 256, MaxCleanups: 1024, MaxOrdersPerHost: 256}
}

// StartGrace bounds how long a replica may stay missing on a live host
// that says it is still starting replicas (dragonboat starts N replicas in
// O(N^2): a host restoring 10,000 replicas needs minutes).
const StartGrace = 10 * time.Minute

// Input is everything one planning round depends on.
type Input struct {
	Now   time.Time
	State *db.State
	Obs   *Observed
	// ObsSince is when this scheduler's observations became complete (the
	// server's start). Silence from before it is not evidence of death: a
	// new leader never declares a host dead on missing memory.
	ObsSince time.Time
	// Epoch under which the decisions and orders are issued.
	Epoch uint64
	// Seed for tie-breaking among equally good hosts.
	Seed uint64
	// Shards and Hosts to evaluate; All evaluates everything.
	Shards []uint64
	Hosts  []string
	All    bool

	ShardConfig *ShardConfig
	Limits      Limits

	// Down lists registered hosts the scheduler judges suspect or dead
	// (balancing waits while any of them holds replicas).
	Down []string
	// LeaderMoves holds when each shard's leadership was last moved by
	// balancing, at least over the cool-down; TransferBudget is how many
	// leader transfers this round may start (max_leader_transfers).
	LeaderMoves    map[uint64]time.Time
	TransferBudget int
	// PlacedAt is when a round last placed a new shard or queued one for
	// placement (Output.Placing); balancing waits while placements flow.
	PlacedAt time.Time
	// ResultAt records when each host's order results first arrived (by
	// host, then order ID), on the scheduler's clock; nil when unknown.
	ResultAt map[string]map[string]time.Time
}

// HostOrder is an order addressed to a host.
type HostOrder struct {
	HostID string
	Order  *drummerpb.Order
}

// Output is the result of a planning round.
type Output struct {
	// Decisions to propose, in order, in one command.
	Decisions []*dbpb.Decision
	// ShardOrders replaces the orders of every evaluated shard.
	ShardOrders map[uint64][]HostOrder
	// HostOrders replaces the host-level orders (cleanups) of every
	// evaluated host.
	HostOrders map[string][]*drummerpb.Order
	// Reports for the evaluated shards and hosts.
	Shards map[uint64]*ShardReport
	Hosts  map[string]*HostReport
	// Again lists shards held back by a per-round limit, to evaluate again
	// next round.
	Again []uint64
	// Transfers lists the shards whose leadership this round moves for
	// balance (or off a host that may not lead).
	Transfers []uint64
	// Placing says the round placed a new shard or queued one for the
	// next round.
	Placing bool

	balanceWhy string
}

// Liveness of a host or replica as the planner judges it.
type Liveness int

// Liveness values.
const (
	Up Liveness = iota
	Suspect
	Dead
)

func (l Liveness) String() string {
	switch l {
	case Up:
		return "up"
	case Suspect:
		return "suspect"
	}
	return "dead"
}

// ShardReport is the planner's verdict on one shard.
type ShardReport struct {
	ShardID uint64
	// healthy | under_replicated | unavailable | pending
	Health      string
	LeaderID    uint64
	Term        uint64
	CCI         uint64
	Members     []MemberReport
	Explanation []string
}

// MemberReport describes one member of a shard.
type MemberReport struct {
	ReplicaID uint64
	HostID    string
	Role      string // voter | non_voting
	// live | starting | suspect | dead | away
	State    string
	IsLeader bool
}

// HostReport is the planner's verdict on one host.
type HostReport struct {
	HostID      string
	Liveness    Liveness
	Registered  bool
	Replicas    int
	Explanation string
}
