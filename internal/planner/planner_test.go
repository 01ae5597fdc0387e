package planner

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// fixture builds a DB through real commands and the observations a
// scheduler would hold, then runs planning rounds and applies their
// decisions like the server does.
type fixture struct {
	t     *testing.T
	st    *db.State
	obs   *Observed
	now   time.Time
	since time.Time // ObsSince
	addr  map[string]string
}

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, st: db.New(), obs: NewObserved(), now: t0, since: t0, addr: map[string]string{}}
	f.cmd(&dbpb.Command{Op: &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{Holder: 1, DeploymentId: 1}}})
	// Report every second, suspect after 5s, dead after 30s.
	f.cmd(&dbpb.Command{Op: &dbpb.Command_SetConfig{SetConfig: &dbpb.SetConfig{Config: db.DefaultConfig()}}})
	f.cmd(&dbpb.Command{Op: &dbpb.Command_Launch{Launch: &dbpb.Launch{}}})
	return f
}

func (f *fixture) cmd(c *dbpb.Command) db.Result {
	f.t.Helper()
	c.Version = db.CommandVersion
	c.NowUnixMs = f.now.UnixMilli()
	if _, ok := c.Op.(*dbpb.Command_Decisions); ok {
		c.Epoch = f.st.Epoch
	}
	r := f.st.ApplyCommand(c)
	if r.Code != dbpb.Code_CODE_OK {
		f.t.Fatalf("command %v: %v", c.Op, r.Code)
	}
	return r
}

// decide applies decisions and fails on any refused one.
func (f *fixture) decide(ds ...*dbpb.Decision) {
	f.t.Helper()
	if len(ds) == 0 {
		return
	}
	r := f.cmd(&dbpb.Command{Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: ds}}})
	for i, c := range r.Data {
		if dbpb.Code(c) != dbpb.Code_CODE_OK && dbpb.Code(c) != dbpb.Code_CODE_NOOP {
			f.t.Fatalf("decision %v: %v", ds[i], dbpb.Code(c))
		}
	}
}

func (f *fixture) setConfig(mod func(c *dbpb.Config)) {
	c := proto.CloneOf(f.st.Config)
	mod(c)
	f.cmd(&dbpb.Command{Op: &dbpb.Command_SetConfig{SetConfig: &dbpb.SetConfig{Config: c}}})
}

// host registers a host in a region and records a report from it now.
func (f *fixture) host(id, region string) {
	f.t.Helper()
	n := len(f.addr) + 1
	f.addr[id] = fmt.Sprintf("10.0.0.%d:7100", n)
	f.decide(&dbpb.Decision{Kind: &dbpb.Decision_RegisterHost{RegisterHost: &dbpb.RegisterHost{
		HostId: id, RaftAddress: f.addr[id], Labels: map[string]string{RegionLabel: region}, Apps: []string{"kv"}}}})
	f.hear(id)
}

// hear records a (content-free) report from a host now.
func (f *fixture) hear(ids ...string) {
	for _, id := range ids {
		o := f.obs.Hosts[id]
		if o == nil {
			h := f.st.Hosts[id]
			o = &HostObs{ID: id, Replicas: map[uint64]*drummerpb.ReplicaReport{}, Results: map[string]*drummerpb.OrderResult{}}
			if h != nil {
				o.RaftAddress, o.Labels, o.Apps = h.RaftAddress, h.Labels, h.Apps
			}
			f.obs.Hosts[id] = o
		}
		o.LastHeard = f.now
	}
}

func (f *fixture) admin(id string, a dbpb.HostAdmin) {
	f.cmd(&dbpb.Command{Op: &dbpb.Command_SetHostAdmin{SetHostAdmin: &dbpb.SetHostAdmin{HostId: id, Admin: a}}})
}

func (f *fixture) maintenance(id string, d time.Duration) {
	f.cmd(&dbpb.Command{Op: &dbpb.Command_SetHostAdmin{SetHostAdmin: &dbpb.SetHostAdmin{
		HostId: id, MaintenanceUntilUnixMs: f.now.Add(d).UnixMilli(), MaintenanceOnly: true}}})
}

func (f *fixture) createShard(id uint64, replicas uint32, regions map[string]uint32) {
	f.cmd(&dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{
		Shards: []*dbpb.ShardSpec{{ShardId: id, App: "kv", Replicas: replicas, Regions: regions}}}}})
}

// shard creates a shard placed on hosts (replica IDs 1..n in order),
// bootstrapped, with every replica running and replica 1 leading.
func (f *fixture) shard(id uint64, hosts ...string) {
	f.t.Helper()
	f.createShard(id, uint32(len(hosts)), nil)
	f.decide(&dbpb.Decision{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: id, HostIds: hosts}}},
		&dbpb.Decision{Kind: &dbpb.Decision_MarkBootstrapped{MarkBootstrapped: &dbpb.MarkBootstrapped{ShardId: id}}})
	sh := f.st.Shards.Get(id)
	voters := map[uint64]string{}
	for _, m := range sh.Members {
		voters[m.ReplicaId] = f.addr[m.HostId]
	}
	f.membership(id, 10, voters, nil)
	for _, m := range sh.Members {
		f.run(id, m.ReplicaId, m.HostId, sh.Members[0].ReplicaId, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
	}
}

// run records that host runs the replica, seeing leader, as role.
func (f *fixture) run(shardID, replicaID uint64, hostID string, leader uint64, role drummerpb.ReplicaRole) {
	f.hear(hostID)
	ms := f.obs.Memberships[shardID]
	r := &drummerpb.ReplicaReport{ShardId: shardID, ReplicaId: replicaID, LeaderId: leader, Term: 1, Role: role, App: "kv", CaughtUp: true}
	if ms != nil {
		r.ConfigChangeId = ms.ConfigChangeId
	}
	f.obs.Hosts[hostID].SetReplica(r)
}

// membership records the shard's membership as every member host claims
// it, and has the running replicas it lists apply it (their reports show
// its ConfigChangeID).
func (f *fixture) membership(shardID, ccid uint64, voters, nonVoting map[uint64]string, removed ...uint64) {
	ms := &drummerpb.Membership{ConfigChangeId: ccid, Voters: voters, NonVoting: nonVoting, Removed: removed}
	f.obs.Memberships[shardID] = ms
	hs := map[string]*HostClaims{}
	if sh := f.st.Shards.Get(shardID); sh != nil {
		for _, m := range sh.Members {
			hs[m.HostId] = &HostClaims{Newest: Claim{M: ms}, Latest: Claim{M: ms}}
		}
	}
	f.obs.Claims[shardID] = hs
	for _, o := range f.obs.Hosts {
		if r := o.Replicas[shardID]; r != nil {
			_, v := voters[r.ReplicaId]
			_, n := nonVoting[r.ReplicaId]
			if v || n {
				r.ConfigChangeId = ccid
			}
		}
	}
}

// stop records that a host no longer runs its replica of a shard.
func (f *fixture) stop(hostID string, shardID uint64) {
	f.obs.Hosts[hostID].DropReplica(shardID)
	f.obs.LastRunning[ReplicaKey{ShardID: shardID}] = f.now
}

// advance moves the clock; hosts in alive keep reporting.
func (f *fixture) advance(d time.Duration, alive ...string) {
	f.now = f.now.Add(d)
	f.hear(alive...)
}

func (f *fixture) input(all bool) Input {
	return Input{Now: f.now, State: f.st, Obs: f.obs, ObsSince: f.since, Epoch: f.st.Epoch, Seed: 42, All: all}
}

// plan runs a full round without applying its decisions.
func (f *fixture) plan() *Output { return Plan(f.input(true)) }

// round runs a full round and applies its decisions.
func (f *fixture) round() *Output {
	f.t.Helper()
	out := f.plan()
	f.decide(out.Decisions...)
	return out
}

func kinds(out *Output) []string {
	var k []string
	for _, d := range out.Decisions {
		k = append(k, strings.TrimPrefix(fmt.Sprintf("%T", d.Kind), "*dbpb.Decision_"))
	}
	return k
}

func startRepairs(out *Output) []*dbpb.StartRepair {
	var rs []*dbpb.StartRepair
	for _, d := range out.Decisions {
		if r := d.GetStartRepair(); r != nil {
			rs = append(rs, r)
		}
	}
	return rs
}

func ccOrders(out *Output, shardID uint64) []*drummerpb.ConfigChangeOrder {
	var cs []*drummerpb.ConfigChangeOrder
	for _, ho := range out.ShardOrders[shardID] {
		if c := ho.Order.GetConfigChange(); c != nil {
			cs = append(cs, c)
		}
	}
	return cs
}

func explanation(out *Output, shardID uint64) string {
	if r := out.Shards[shardID]; r != nil {
		return strings.Join(r.Explanation, "; ")
	}
	return ""
}

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s %q does not contain %q", what, s, sub)
		}
	}
}

// ---------------------------------------------------------------------------
// Placement.

func TestPlacementHonoursRegionsAndPrefersLeastLoaded(t *testing.T) {
	f := newFixture(t)
	for _, h := range []struct{ id, region string }{{"a1", "r1"}, {"a2", "r1"}, {"b1", "r2"}, {"b2", "r2"}, {"c1", "r3"}, {"c2", "r3"}} {
		f.host(h.id, h.region)
	}
	// Load a1, b2 and c1 with two replicas each.
	f.shard(1, "a1", "b2", "c1")
	f.shard(2, "a1", "b2", "c1")
	f.cmd(&dbpb.Command{Op: &dbpb.Command_SetRegions{SetRegions: &dbpb.SetRegions{Regions: map[string]uint32{"r1": 1, "r2": 1, "r3": 1}}}})
	f.createShard(3, 3, nil)
	// A shard-level placement overrides the deployment's.
	f.createShard(4, 3, map[string]uint32{"r1": 2, "r2": 1})
	out := f.round()
	place := map[uint64][]string{}
	for _, d := range out.Decisions {
		if p := d.GetPlaceShard(); p != nil {
			place[p.ShardId] = slices.Sorted(slices.Values(p.HostIds))
		}
	}
	if got, want := place[3], []string{"a2", "b1", "c2"}; !slices.Equal(got, want) {
		t.Errorf("shard 3 placed on %v, want one per region on the least loaded hosts %v", got, want)
	}
	// r1 has only a1 and a2, so both; in r2 the least loaded is b1 (b2 holds
	// two replicas, b1 one by now).
	if got, want := place[4], []string{"a1", "a2", "b1"}; !slices.Equal(got, want) {
		t.Errorf("shard 4 placed on %v, want %v", got, want)
	}
	if len(place) != 2 {
		t.Errorf("placements %v, want shards 3 and 4", place)
	}
	// A region that cannot hold its count: nothing placed, and why.
	f.createShard(5, 3, map[string]uint32{"r1": 3})
	out = f.round()
	if len(out.Decisions) != 0 {
		t.Errorf("decisions for an impossible placement: %v", kinds(out))
	}
	wantContains(t, "explanation", explanation(out, 5), "needs 3 eligible hosts in region r1, found 2")
}

func TestPlacementSkipsUnavailableHosts(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"ok1", "ok2", "ok3", "suspect", "cordoned", "draining", "maint", "silent"} {
		f.host(id, "r1")
	}
	f.admin("cordoned", dbpb.HostAdmin_HOST_ADMIN_CORDONED)
	f.admin("draining", dbpb.HostAdmin_HOST_ADMIN_DRAINING)
	f.maintenance("maint", time.Hour)
	// "suspect" stops reporting; everyone else keeps reporting.
	f.advance(6*time.Second, "ok1", "ok2", "ok3", "cordoned", "draining", "maint", "silent")
	f.admin("silent", dbpb.HostAdmin_HOST_ADMIN_CORDONED)
	f.createShard(1, 3, nil)
	f.createShard(2, 4, nil)
	out := f.round()
	var placed [][]string
	for _, d := range out.Decisions {
		if p := d.GetPlaceShard(); p != nil {
			placed = append(placed, p.HostIds)
			if p.ShardId != 1 {
				t.Errorf("shard %d placed on %v with only 3 eligible hosts", p.ShardId, p.HostIds)
			}
			if got := slices.Sorted(slices.Values(p.HostIds)); !slices.Equal(got, []string{"ok1", "ok2", "ok3"}) {
				t.Errorf("shard %d placed on %v, want ok1..ok3", p.ShardId, got)
			}
		}
	}
	if len(placed) != 1 {
		t.Fatalf("placements %v, want one", placed)
	}
	wantContains(t, "explanation", explanation(out, 2), "needs 4 eligible hosts, found 3", "2 cordoned", "1 draining", "1 in maintenance", "1 suspect")
	if got := out.Hosts["suspect"].Liveness; got != Suspect {
		t.Errorf("silent host judged %v, want suspect", got)
	}

	// A new scheduler (cold observations) gives hosts it has not heard from
	// the benefit of the doubt for liveness, but places nothing on them.
	f = newFixture(t)
	for _, id := range []string{"ok1", "ok2", "ok3", "silent"} {
		f.host(id, "r1")
	}
	f.advance(time.Minute)
	f.obs = NewObserved()
	f.since = f.now
	f.advance(time.Second, "ok1", "ok2", "ok3")
	f.createShard(1, 4, nil)
	f.createShard(2, 3, nil)
	out = f.round()
	if got := out.Hosts["silent"].Liveness; got != Up {
		t.Errorf("host not heard since the takeover judged %v, want up", got)
	}
	for _, d := range out.Decisions {
		if p := d.GetPlaceShard(); p != nil && (p.ShardId != 2 || slices.Contains(p.HostIds, "silent")) {
			t.Errorf("placement %v by a new scheduler on a host it never heard from", p)
		}
	}
	wantContains(t, "explanation", explanation(out, 1), "needs 4 eligible hosts, found 3", "1 not heard from recently")

	// A dead member is replaced on an eligible host only, never on the
	// hosts out of service.
	f = newFixture(t)
	for _, id := range []string{"a", "b", "c", "cordoned", "maint", "suspect", "spare"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.admin("cordoned", dbpb.HostAdmin_HOST_ADMIN_CORDONED)
	f.maintenance("maint", time.Hour)
	f.advance(31*time.Second, "a", "b", "cordoned", "maint", "spare")
	f.advance(0)
	f.obs.Hosts["suspect"].LastHeard = f.now.Add(-6 * time.Second)
	out = f.round()
	rs := startRepairs(out)
	if len(rs) != 1 || rs[0].NewHostId != "spare" || rs[0].OldReplicaId != 3 || rs[0].Kind != dbpb.RepairKind_REPAIR_KIND_REPLACE {
		t.Fatalf("repairs %v, want replica 3 replaced on spare", rs)
	}
}

// ---------------------------------------------------------------------------
// Repairs.

// repairTo walks a repair of shard 1 to the given step through the DB.
func (f *fixture) repairTo(kind dbpb.RepairKind, newHost string, old uint64, step dbpb.RepairStep) *dbpb.Repair {
	f.t.Helper()
	f.decide(&dbpb.Decision{Kind: &dbpb.Decision_StartRepair{StartRepair: &dbpb.StartRepair{ShardId: 1, Kind: kind, NewHostId: newHost, OldReplicaId: old}}})
	r := f.st.Shards.Get(1).Repair
	for r.Step != step {
		next := db.NextStep(r.Kind, r.Step)
		if step == dbpb.RepairStep_REPAIR_STEP_ROLLBACK {
			next = step
		}
		f.decide(&dbpb.Decision{Kind: &dbpb.Decision_AdvanceRepair{AdvanceRepair: &dbpb.AdvanceRepair{ShardId: 1, RepairId: r.Id, From: r.Step, To: next}}})
		r = f.st.Shards.Get(1).Repair
	}
	return r
}

func TestRepairNeverRemovesBelowQuorum(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.admin("c", dbpb.HostAdmin_HOST_ADMIN_DRAINING)
	// Moving replica 3 off the draining host c to d: the new replica 4 was
	// added, caught up and promoted.
	f.repairTo(dbpb.RepairKind_REPAIR_KIND_MOVE, "d", 3, dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD)
	voters := map[uint64]string{1: f.addr["a"], 2: f.addr["b"], 3: f.addr["c"], 4: f.addr["d"]}
	f.membership(1, 20, voters, nil)
	f.run(1, 4, "d", 1, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
	f.advance(time.Second, "a", "b", "c", "d")

	// Now b and d die: removing the live replica 3 would leave 1 live voter
	// (a) of 3. The planner must wait.
	f.advance(31*time.Second, "a", "c")
	out := f.round()
	if cs := ccOrders(out, 1); len(cs) != 0 {
		t.Fatalf("config change %v ordered with 2 of 4 voters live", cs)
	}
	wantContains(t, "explanation", explanation(out, 1), "would leave fewer live voters than a quorum")

	// d comes back: removing 3 leaves a and d live of {1, 2, 4}: allowed.
	f.run(1, 4, "d", 1, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
	f.advance(time.Second, "a", "c", "d")
	out = f.round()
	cs := ccOrders(out, 1)
	if len(cs) != 1 || cs[0].Type != drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE || cs[0].ReplicaId != 3 || cs[0].ConfigChangeId != 20 {
		t.Fatalf("orders %v, want removal of replica 3 against config change 20", cs)
	}

	// Promotion that would leave the shard without a quorum waits too:
	// three voters, one dead, a non-voting replica that is not live.
	f = newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.advance(31*time.Second, "a", "b", "d")
	r := f.repairTo(dbpb.RepairKind_REPAIR_KIND_REPLACE, "d", 3, dbpb.RepairStep_REPAIR_STEP_PROMOTE)
	f.membership(1, 20, map[uint64]string{1: f.addr["a"], 2: f.addr["b"], 3: f.addr["c"]}, map[uint64]string{r.NewReplicaId: f.addr["d"]})
	// The new replica runs but is still pending (not initialized).
	f.run(1, r.NewReplicaId, "d", 0, drummerpb.ReplicaRole_REPLICA_ROLE_NON_VOTING)
	f.obs.Hosts["d"].Replicas[1].Pending = true
	out = f.round()
	if cs := ccOrders(out, 1); len(cs) != 0 {
		t.Fatalf("promotion %v ordered for a replica that is not live", cs)
	}
}

func TestDeadTargetRollsRepairBack(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.advance(31*time.Second, "a", "b", "d")
	out := f.round()
	rs := startRepairs(out)
	if len(rs) != 1 || rs[0].NewHostId != "d" {
		t.Fatalf("repairs %v, want replica 3 replaced on d", rs)
	}
	r := f.st.Shards.Get(1).Repair
	// The add is ordered against the observed config change ID.
	out = f.round()
	cs := ccOrders(out, 1)
	if len(cs) != 1 || cs[0].Type != drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_ADD_NON_VOTING || cs[0].ReplicaId != r.NewReplicaId ||
		cs[0].Target != f.addr["d"] || cs[0].ConfigChangeId != 10 {
		t.Fatalf("orders %v, want add of %d on d against config change 10", cs, r.NewReplicaId)
	}
	// The add went through; then d dies before starting the replica.
	f.membership(1, 11, map[uint64]string{1: f.addr["a"], 2: f.addr["b"], 3: f.addr["c"]}, map[uint64]string{r.NewReplicaId: f.addr["d"]})
	out = f.round()
	if f.st.Shards.Get(1).Repair.Step != dbpb.RepairStep_REPAIR_STEP_START {
		t.Fatalf("step %v after the add, want start", f.st.Shards.Get(1).Repair.Step)
	}
	f.advance(31*time.Second, "a", "b")
	out = f.round()
	if got := f.st.Shards.Get(1).Repair.Step; got != dbpb.RepairStep_REPAIR_STEP_ROLLBACK {
		t.Fatalf("step %v with the target dead, want rollback (decisions %v)", got, kinds(out))
	}
	// Rolling back removes the half-added replica through a live member.
	out = f.round()
	cs = ccOrders(out, 1)
	if len(cs) != 1 || cs[0].Type != drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE || cs[0].ReplicaId != r.NewReplicaId || cs[0].ConfigChangeId != 11 {
		t.Fatalf("orders %v, want removal of the new replica", cs)
	}
	if h := out.ShardOrders[1][0].HostID; h != "a" && h != "b" {
		t.Errorf("removal ordered on %s, want a live member's host", h)
	}
	// Once the membership shows it gone, the repair fails and the new
	// replica's host is told to clean up when it returns. Losing the
	// target is not the shard's failure: no backoff, only a short pause.
	f.membership(1, 12, map[uint64]string{1: f.addr["a"], 2: f.addr["b"], 3: f.addr["c"]}, nil, r.NewReplicaId)
	f.round()
	sh := f.st.Shards.Get(1)
	if sh.Repair != nil || sh.Failures != 0 || db.Member(sh, r.NewReplicaId) != nil {
		t.Fatalf("after rollback: repair %v failures %d members %v", sh.Repair, sh.Failures, sh.Members)
	}
	if wait := time.UnixMilli(sh.RetryAfterUnixMs).Sub(f.now); wait <= 0 || wait > time.Duration(db.TargetLostDelay)*time.Millisecond {
		t.Fatalf("retry after %s, want a pause of at most %dms", wait, db.TargetLostDelay)
	}
	if _, ok := f.st.Cleanups[db.CleanupKey{HostID: "d", ShardID: 1, ReplicaID: r.NewReplicaId}]; !ok {
		t.Error("no cleanup recorded for the rolled-back replica")
	}

	// A target that dies before the add is applied: the repair fails at
	// once, nothing to roll back.
	f = newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.advance(31*time.Second, "a", "b", "d")
	f.round()
	f.advance(6*time.Second, "a", "b")
	out = f.round()
	if f.st.Shards.Get(1).Repair != nil || !slices.Contains(kinds(out), "FinishRepair") {
		t.Fatalf("repair %v after its target died before the add (decisions %v)", f.st.Shards.Get(1).Repair, kinds(out))
	}
	if sh := f.st.Shards.Get(1); sh.Failures != 0 {
		t.Fatalf("a lost target counted as the shard's failure (%d, %q)", sh.Failures, sh.LastFailure)
	}
}

func TestUnavailableShardIsNeverRepairedFromTheMinority(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.advance(time.Minute, "a", "d", "e")
	f.run(1, 1, "a", 0, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
	out := f.round()
	rep := out.Shards[1]
	if rep.Health != "unavailable" {
		t.Fatalf("health %q, want unavailable", rep.Health)
	}
	wantContains(t, "explanation", explanation(out, 1), "1 of 3 voters live, quorum is 2",
		"waiting for replica 2 on "+f.addr["b"]+", replica 3 on "+f.addr["c"]+" to return with its data")
	if len(startRepairs(out)) != 0 || len(ccOrders(out, 1)) != 0 {
		t.Fatalf("repair %v / orders %v for a shard without quorum", startRepairs(out), ccOrders(out, 1))
	}
	// With a repair already in flight the shard still says what it waits
	// for, and orders no membership change.
	f = newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	r := f.repairTo(dbpb.RepairKind_REPAIR_KIND_REPLACE, "d", 3, dbpb.RepairStep_REPAIR_STEP_ROLLBACK)
	f.membership(1, 11, map[uint64]string{1: f.addr["a"], 2: f.addr["b"], 3: f.addr["c"]}, map[uint64]string{r.NewReplicaId: f.addr["d"]})
	f.advance(time.Minute, "a", "d")
	f.run(1, 1, "a", 0, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
	out = f.round()
	if out.Shards[1].Health != "unavailable" || len(startRepairs(out)) != 0 {
		t.Fatalf("health %q repairs %v", out.Shards[1].Health, startRepairs(out))
	}
	// (Removing the half-added non-voting replica may be ordered: it cannot
	// commit without a quorum, and could not hurt if it did.)
	for _, c := range ccOrders(out, 1) {
		if c.Type != drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE || c.ReplicaId != r.NewReplicaId {
			t.Fatalf("membership change %v ordered without a quorum", c)
		}
	}
	wantContains(t, "explanation", explanation(out, 1), "waiting for replica 2 on "+f.addr["b"])
}

func TestMostEndangeredRepairedFirstUnderGlobalCap(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		f.host(id, "r1")
	}
	f.setConfig(func(c *dbpb.Config) { c.MaxConcurrentRepairs = 1 })
	// Shard 1: five replicas, one dead (one failure from losing quorum
	// still leaves a margin). Shard 2: three replicas, one dead (no margin).
	f.shard(1, "a", "b", "c", "d", "e")
	f.shard(2, "a", "b", "e")
	f.shard(3, "a", "b", "c")
	f.advance(31*time.Second, "a", "b", "c", "d", "f", "g")
	out := f.round()
	rs := startRepairs(out)
	if len(rs) != 1 || rs[0].ShardId != 2 {
		t.Fatalf("repairs %v, want only shard 2 (the most endangered)", rs)
	}
	wantContains(t, "explanation", explanation(out, 1), "waiting: 1 repairs in flight, the limit (max_concurrent_repairs)")
	if got := out.Shards[3].Health; got != "healthy" {
		t.Errorf("shard 3 is %s, want healthy", got)
	}
	// The per-round limit holds the rest back for the next round.
	f = newFixture(t)
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c", "d", "e")
	f.shard(2, "a", "b", "e")
	f.advance(31*time.Second, "a", "b", "c", "d", "f", "g")
	in := f.input(true)
	in.Limits = DefaultLimits()
	in.Limits.MaxNewRepairs = 1
	out = Plan(in)
	if rs := startRepairs(out); len(rs) != 1 || rs[0].ShardId != 2 || !slices.Equal(out.Again, []uint64{1}) {
		t.Fatalf("repairs %v again %v, want shard 2 now and shard 1 next round", rs, out.Again)
	}
}

func TestFreshLeaderDeclaresNoHostDeadBeforeDeadTimeout(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	// c died long ago, but this scheduler just took over with empty
	// observations: only a, b and d report to it.
	f.advance(10 * time.Minute)
	f.obs = NewObserved()
	f.since = f.now
	f.membership(1, 10, map[uint64]string{1: f.addr["a"], 2: f.addr["b"], 3: f.addr["c"]}, nil)
	for step := time.Second; step < 30*time.Second; step += time.Second {
		f.advance(time.Second, "a", "b", "d")
		f.run(1, 1, "a", 1, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
		f.run(1, 2, "b", 1, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
		out := f.round()
		for _, d := range out.Decisions {
			if d.GetStartRepair() != nil || d.GetForgetHost() != nil || d.GetReplaceHost() != nil {
				t.Fatalf("%s after taking over: %v", f.now.Sub(f.since), d)
			}
		}
		if got := out.Hosts["c"].Liveness; f.now.Sub(f.since) < 5*time.Second && got != Up {
			t.Fatalf("c judged %v %s after taking over", got, f.now.Sub(f.since))
		}
	}
	f.advance(time.Second, "a", "b", "d")
	out := f.round()
	if rs := startRepairs(out); len(rs) != 1 || rs[0].OldReplicaId != 3 || rs[0].NewHostId != "d" {
		t.Fatalf("after the dead timeout: repairs %v, want replica 3 replaced on d", rs)
	}
}

// ---------------------------------------------------------------------------
// Regressions found by the simulator (internal/sim).

// A forgotten host must not be registered again from its lingering
// observations, nor may those take its raft address from the identity that
// uses it now.
func TestStaleObservationsDoNotRegisterHosts(t *testing.T) {
	f := newFixture(t)
	f.host("old", "r1")
	f.setConfig(func(c *dbpb.Config) { c.HostGcAfterMs = c.DeadTimeoutMs })
	f.advance(31 * time.Second)
	out := f.round()
	if !slices.Contains(kinds(out), "ForgetHost") || f.st.Hosts["old"] != nil {
		t.Fatalf("dead empty host not forgotten: %v", kinds(out))
	}
	for range 3 {
		if out := f.round(); len(out.Decisions) != 0 {
			t.Fatalf("forgotten host re-registered from old observations: %v", out.Decisions)
		}
	}
	// The machine comes back with a wiped disk as a new identity on the same
	// address, then is briefly silent; the old identity's observations must
	// not replace it.
	f.obs.Hosts["new"] = &HostObs{ID: "new", RaftAddress: f.obs.Hosts["old"].RaftAddress, Labels: map[string]string{RegionLabel: "r1"}, Apps: []string{"kv"},
		Replicas: map[uint64]*drummerpb.ReplicaReport{}, Results: map[string]*drummerpb.OrderResult{}, LastHeard: f.now}
	f.round()
	if f.st.Hosts["new"] == nil {
		t.Fatal("new identity not registered")
	}
	f.advance(6 * time.Second)
	for range 3 {
		out := f.round()
		for _, d := range out.Decisions {
			if d.GetReplaceHost() != nil || d.GetRegisterHost() != nil {
				t.Fatalf("stale observations decided %v", d)
			}
		}
	}
}

// A dead member on a replaced identity, with no other host to replace it
// on, is removed first so that the host's new identity (same address) can
// take the replacement.
func TestDeadMemberOnReplacedHostIsRemovedFirst(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	// c's disk is replaced: it reports as c2 on the same address.
	f.obs.Hosts["c2"] = &HostObs{ID: "c2", RaftAddress: f.addr["c"], Labels: map[string]string{RegionLabel: "r1"}, Apps: []string{"kv"},
		Replicas: map[uint64]*drummerpb.ReplicaReport{}, Results: map[string]*drummerpb.OrderResult{}}
	f.advance(6*time.Second, "a", "b", "c2")
	f.round()
	if f.st.Hosts["c"].Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED || f.st.Hosts["c2"] == nil {
		t.Fatalf("c not replaced by c2: %v", f.st.Hosts)
	}
	out := f.round()
	rs := startRepairs(out)
	if len(rs) != 1 || rs[0].Kind != dbpb.RepairKind_REPAIR_KIND_REMOVE || rs[0].OldReplicaId != 3 {
		t.Fatalf("repairs %v, want removal of replica 3 (decisions %v; %s)", rs, kinds(out), explanation(out, 1))
	}
	out = f.round()
	cs := ccOrders(out, 1)
	if len(cs) != 1 || cs[0].Type != drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE || cs[0].ReplicaId != 3 {
		t.Fatalf("orders %v", cs)
	}
	f.membership(1, 11, map[uint64]string{1: f.addr["a"], 2: f.addr["b"]}, nil, 3)
	f.round()
	out = f.round()
	if rs := startRepairs(out); len(rs) != 1 || rs[0].Kind != dbpb.RepairKind_REPAIR_KIND_ADD || rs[0].NewHostId != "c2" {
		t.Fatalf("repairs %v, want a new replica on c2", rs)
	}
}

// A repair that cannot progress because its shard lost quorum does not
// hold a repair slot.
func TestStalledRepairDoesNotHoldASlot(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d", "e", "f"} {
		f.host(id, "r1")
	}
	f.setConfig(func(c *dbpb.Config) { c.MaxConcurrentRepairs = 1 })
	f.shard(1, "a", "b", "c")
	f.shard(2, "d", "e", "f")
	f.repairTo(dbpb.RepairKind_REPAIR_KIND_REPLACE, "d", 3, dbpb.RepairStep_REPAIR_STEP_ROLLBACK)
	// Shard 1 loses b and c for good; shard 2 loses f.
	f.advance(31*time.Second, "a", "d", "e")
	out := f.round()
	if rs := startRepairs(out); len(rs) != 1 || rs[0].ShardId != 2 {
		t.Fatalf("repairs %v, want shard 2 repaired despite shard 1's stalled repair; %s", rs, explanation(out, 2))
	}
}

// A replica the host confirmed stopped and deleted is not condemned again
// from a disk inventory taken before.
func TestRemovedDataIsNotCondemnedTwice(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	o := f.obs.Hosts["a"]
	o.DiskKnown, o.DiskAt = true, f.now
	o.Disk = map[ReplicaKey]struct{}{{ShardID: 1, ReplicaID: 1}: {}, {ShardID: 9, ReplicaID: 7}: {}}
	out := f.round()
	if !slices.Contains(kinds(out), "AddCleanup") {
		t.Fatalf("zombie data of deleted shard 9 not found: %v", kinds(out))
	}
	orders := out.HostOrders["a"]
	if len(orders) != 0 {
		t.Fatalf("orders before the cleanup is recorded: %v", orders)
	}
	out = f.round()
	if len(out.HostOrders["a"]) != 1 || out.HostOrders["a"][0].GetStop() == nil {
		t.Fatalf("host orders %v, want one stop", out.HostOrders["a"])
	}
	id := out.HostOrders["a"][0].Id
	o.Results[id] = &drummerpb.OrderResult{Id: id, Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_DONE, ShardId: 9, ReplicaId: 7}
	f.advance(time.Second, "a", "b", "c")
	out = f.round()
	if !slices.Contains(kinds(out), "DoneCleanup") || len(f.st.Cleanups) != 0 {
		t.Fatalf("cleanup not completed: %v", kinds(out))
	}
	// The disk inventory (taken before the removal) still lists 9/7.
	for range 3 {
		if out := f.round(); len(out.Decisions) != 0 {
			t.Fatalf("removed data condemned again: %v", out.Decisions)
		}
	}
}

// The planner is deterministic and does not modify its input.
func TestPlanIsPureAndDeterministic(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		f.host(id, fmt.Sprintf("r%d", len(id)%2))
	}
	f.shard(1, "a", "b", "c")
	f.createShard(2, 3, nil)
	f.advance(31*time.Second, "a", "b", "d", "e")
	hash := f.st.Hash()
	obs := maps.Clone(f.obs.Hosts)
	first := f.plan()
	for range 5 {
		again := f.plan()
		if fmt.Sprint(again.Decisions) != fmt.Sprint(first.Decisions) {
			t.Fatalf("decisions differ between identical rounds:\n%v\n%v", first.Decisions, again.Decisions)
		}
	}
	if f.st.Hash() != hash || !maps.Equal(obs, f.obs.Hosts) {
		t.Fatal("Plan modified its input")
	}
}

// A shard ID deleted and created again is a new Raft group: the membership
// its old replicas reported (higher ConfigChangeID, lower replica IDs) says
// nothing about it.
func TestMembershipOfEarlierIncarnationIsIgnored(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.membership(1, 500, map[uint64]string{1: f.addr["a"], 2: f.addr["b"], 3: f.addr["c"]}, nil)
	old := f.obs.Memberships[1]
	f.cmd(&dbpb.Command{Op: &dbpb.Command_DeleteShards{DeleteShards: &dbpb.DeleteShards{ShardIds: []uint64{1}}}})
	for _, h := range []string{"a", "b", "c"} {
		delete(f.obs.Hosts[h].Replicas, 1)
	}
	f.createShard(1, 3, nil)
	f.decide(&dbpb.Decision{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: 1, HostIds: []string{"b", "c", "d"}}}},
		&dbpb.Decision{Kind: &dbpb.Decision_MarkBootstrapped{MarkBootstrapped: &dbpb.MarkBootstrapped{ShardId: 1}}})
	for i, h := range []string{"b", "c", "d"} {
		f.run(1, uint64(4+i), h, 4, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
	}
	// Only the old incarnation's membership is known so far: it must not
	// make the new one look unavailable, nor its replicas unexpected.
	out := f.round()
	if got := out.Shards[1].Health; got != "healthy" {
		t.Fatalf("re-created shard is %s: %s", got, explanation(out, 1))
	}
	if rs := startRepairs(out); len(rs) != 0 {
		t.Fatalf("repairs %v driven by the old incarnation's membership", rs)
	}
	// The new group's membership (ConfigChangeID starting over) replaces
	// the old one in the observations.
	neu := &drummerpb.Membership{ConfigChangeId: 3, Voters: map[uint64]string{4: f.addr["b"], 5: f.addr["c"], 6: f.addr["d"]}}
	if !NewerMembership(neu, old) || NewerMembership(old, neu) {
		t.Fatal("the new incarnation's membership is not the newer one")
	}
}

func TestNewerMembership(t *testing.T) {
	ms := func(ccid uint64, ids ...uint64) *drummerpb.Membership {
		m := &drummerpb.Membership{ConfigChangeId: ccid, Voters: map[uint64]string{}}
		for _, id := range ids {
			m.Voters[id] = fmt.Sprintf("10.0.0.%d:1", id)
		}
		return m
	}
	for _, tc := range []struct {
		m, old *drummerpb.Membership
		want   bool
	}{
		{ms(5, 1, 2, 3), nil, true},
		{nil, ms(5, 1, 2, 3), false},
		{ms(6, 1, 2, 4), ms(5, 1, 2, 3), true},                      // same incarnation, later change
		{ms(4, 1, 2, 3), ms(5, 1, 2, 4), false},                     // same incarnation, stale
		{ms(5, 1, 2, 3), ms(5, 1, 2, 3), false},                     // same
		{ms(3, 7, 8, 9), ms(900, 1, 2, 3), true},                    // newer incarnation, log started over
		{ms(900, 1, 2, 3), ms(3, 7, 8, 9), false},                   // older incarnation
		{ms(60, 7, 8, 9), ms(50, 1, 2, 3), true},                    // all members replaced over time
		{&drummerpb.Membership{ConfigChangeId: 9}, ms(5, 1), false}, // empty
	} {
		if got := NewerMembership(tc.m, tc.old); got != tc.want {
			t.Errorf("NewerMembership(%v, %v) = %v, want %v", tc.m, tc.old, got, tc.want)
		}
	}
}

// A removal that became unsafe after it was planned (the member's host came
// back, another died) is called off instead of blocking the shard's other
// repairs for ever.
func TestUnsafeRemovalIsCancelled(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.decide(&dbpb.Decision{Kind: &dbpb.Decision_StartRepair{StartRepair: &dbpb.StartRepair{ShardId: 1, Kind: dbpb.RepairKind_REPAIR_KIND_REMOVE, OldReplicaId: 2}}})
	// Replica 2 is live, replica 3 died: removing 2 would leave 1 of 2.
	f.advance(31*time.Second, "a", "b", "d")
	out := f.round()
	if cs := ccOrders(out, 1); len(cs) != 0 {
		t.Fatalf("unsafe removal ordered: %v", cs)
	}
	if f.st.Shards.Get(1).Repair != nil {
		t.Fatalf("unsafe removal still in flight (decisions %v): %s", kinds(out), explanation(out, 1))
	}
	out = f.round()
	if rs := startRepairs(out); len(rs) != 1 || rs[0].Kind != dbpb.RepairKind_REPAIR_KIND_REPLACE || rs[0].OldReplicaId != 3 {
		t.Fatalf("repairs %v, want replica 3 replaced", rs)
	}
}

// A recorded member that the membership lists as removed (its removal was
// applied after the repair that ordered it was called off) is dropped.
func TestRecordOfRemovedReplicaIsDropped(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.membership(1, 11, map[uint64]string{1: f.addr["a"], 2: f.addr["b"]}, nil, 3)
	f.stop("c", 1)
	f.advance(time.Second, "a", "b", "c", "d")
	out := f.round()
	if rs := startRepairs(out); len(rs) != 1 || rs[0].Kind != dbpb.RepairKind_REPAIR_KIND_REMOVE || rs[0].OldReplicaId != 3 {
		t.Fatalf("repairs %v, want the record of removed replica 3 dropped", rs)
	}
	f.round()
	sh := f.st.Shards.Get(1)
	if sh.Repair != nil || db.Member(sh, 3) != nil {
		t.Fatalf("after: repair %v members %v", sh.Repair, sh.Members)
	}
	if _, ok := f.st.Cleanups[db.CleanupKey{HostID: "c", ShardID: 1, ReplicaID: 3}]; !ok {
		t.Error("no cleanup for the removed replica's data")
	}
	// Then the shard gets its third replica back (on c or d).
	if rs := startRepairs(f.round()); len(rs) != 1 || rs[0].Kind != dbpb.RepairKind_REPAIR_KIND_ADD || (rs[0].NewHostId != "c" && rs[0].NewHostId != "d") {
		t.Fatalf("repairs %v, want a new replica on c or d", rs)
	}
}

// The operator removed a dead host that still held a replica, and the
// machine came back (wiped) as a new identity on the same address: the
// dead member still holds that address in the membership, so the new
// identity cannot take its replacement until it is removed.
func TestNoTargetOnAddressHeldByAMember(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.advance(31*time.Second, "a", "b")
	f.cmd(&dbpb.Command{Op: &dbpb.Command_RemoveHost{RemoveHost: &dbpb.RemoveHost{HostId: "c", Force: true}}})
	delete(f.obs.Hosts, "c")
	f.decide(&dbpb.Decision{Kind: &dbpb.Decision_RegisterHost{RegisterHost: &dbpb.RegisterHost{
		HostId: "c2", RaftAddress: f.addr["c"], Labels: map[string]string{RegionLabel: "r1"}, Apps: []string{"kv"}}}})
	f.hear("c2")
	out := f.round()
	rs := startRepairs(out)
	if len(rs) != 1 || rs[0].Kind != dbpb.RepairKind_REPAIR_KIND_REMOVE || rs[0].OldReplicaId != 3 {
		t.Fatalf("repairs %v, want replica 3 removed first (its address is c2's); %s", rs, explanation(out, 1))
	}
}

// Nor does one whose shard has no leader (nothing commits without one),
// e.g. after a cold failover when no leader is left to report.
func TestLeaderlessRepairDoesNotHoldASlot(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d", "e", "f"} {
		f.host(id, "r1")
	}
	f.setConfig(func(c *dbpb.Config) { c.MaxConcurrentRepairs = 1 })
	f.shard(1, "a", "b", "c")
	f.shard(2, "d", "e", "f")
	f.repairTo(dbpb.RepairKind_REPAIR_KIND_REPLACE, "d", 3, dbpb.RepairStep_REPAIR_STEP_ROLLBACK)
	delete(f.obs.Memberships, 1)
	for _, h := range []string{"a", "b"} {
		f.obs.Hosts[h].Replicas[1].LeaderId = 0
	}
	f.advance(31*time.Second, "a", "b", "d", "e")
	out := f.round()
	if rs := startRepairs(out); len(rs) != 1 || rs[0].ShardId != 2 {
		t.Fatalf("repairs %v, want shard 2 repaired despite shard 1's leaderless repair; %s", rs, explanation(out, 2))
	}
}

// TestRefusedChangeRollsBackAtOnce: when Raft refuses a membership change
// as illegal (the executor reports REJECTED and the ConfigChangeID did not
// move), the repair rolls back without waiting for the step deadline; a
// refusal against a stale ConfigChangeID is not taken for one.
func TestRefusedChangeRollsBackAtOnce(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.advance(31*time.Second, "a", "b", "d")
	f.round() // starts the repair onto d
	r := f.st.Shards.Get(1).Repair
	out := f.round()
	cs := ccOrders(out, 1)
	if len(cs) != 1 {
		t.Fatalf("orders %v", cs)
	}
	id := out.ShardOrders[1][0].Order.Id
	exec := out.ShardOrders[1][0].HostID
	// A refusal whose membership shows a newer ConfigChangeID is stale:
	// nothing happens (the next order goes against the new ID).
	f.obs.Hosts[exec].Results[id] = &drummerpb.OrderResult{Id: id, Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED,
		Membership: &drummerpb.Membership{ConfigChangeId: 11}}
	f.round()
	if f.st.Shards.Get(1).Repair == nil {
		t.Fatal("stale refusal rolled the repair back")
	}
	// A refusal at the current ConfigChangeID: the add is illegal.
	f.obs.Hosts[exec].Results[id] = &drummerpb.OrderResult{Id: id, Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED,
		Error: "rejected", Membership: &drummerpb.Membership{ConfigChangeId: 10}}
	out = f.round()
	sh := f.st.Shards.Get(1)
	if sh.Repair != nil || sh.Failures != 1 || !strings.Contains(sh.LastFailure, "refused") {
		t.Fatalf("after an illegal add: repair %v failures %d (%q); decisions %v", sh.Repair, sh.Failures, sh.LastFailure, kinds(out))
	}
	if db.Member(sh, r.NewReplicaId) != nil {
		t.Fatal("the refused replica is still recorded")
	}
}

// shardNotStartedOnC places shard 2 on a, b and c (hosts a to d, shard 1
// on a and b); a and b run their replicas, c does not.
func shardNotStartedOnC(t *testing.T) (*fixture, *dbpb.Shard) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b")
	f.createShard(2, 3, nil)
	f.decide(&dbpb.Decision{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: 2, HostIds: []string{"a", "b", "c"}}}})
	sh := f.st.Shards.Get(2)
	f.membership(2, 1, map[uint64]string{sh.Members[0].ReplicaId: f.addr["a"], sh.Members[1].ReplicaId: f.addr["b"], sh.Members[2].ReplicaId: f.addr["c"]}, nil)
	f.run(2, sh.Members[0].ReplicaId, "a", sh.Members[0].ReplicaId, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
	f.run(2, sh.Members[1].ReplicaId, "b", sh.Members[0].ReplicaId, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
	return f, sh
}

// A replica that never ran, on an up host that has not answered its start
// order, is starting, not dead, however long the order takes to arrive; once
// the host answered it (and still does not run it), the usual timers apply.
func TestReplicaAwaitingItsStartOrderIsNotReplaced(t *testing.T) {
	// Replica 3 on c is added to the record but c never ran it.
	f, sh := shardNotStartedOnC(t)
	f.advance(2*time.Minute, "a", "b", "c", "d")
	out := f.round()
	for _, r := range startRepairs(out) {
		if r.ShardId == 2 {
			t.Fatalf("replica awaiting its start order replaced: %v: %s", r, explanation(out, 2))
		}
	}
	// c answers the start order (done) but does not run the replica.
	rid := sh.Members[2].ReplicaId
	oid := startOrderID(1, 2, rid)
	f.obs.Hosts["c"].Results = map[string]*drummerpb.OrderResult{oid: {Id: oid, ShardId: 2, ReplicaId: rid, Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_DONE}}
	out = f.round()
	replaced := false
	for _, r := range startRepairs(out) {
		replaced = replaced || r.ShardId == 2 && r.OldReplicaId == rid
	}
	if !replaced {
		t.Fatalf("replica 3 answered its start order and has not run for 2 minutes, not replaced: %s", explanation(out, 2))
	}
}

// A replica's timeouts count from when its host answered its start order,
// not from its placement: a start order that took longer than dead_timeout
// to arrive does not get its just-started replica replaced before the
// host's next report can show it running.
func TestStartTimeoutsCountFromTheStartResult(t *testing.T) {
	f, sh := shardNotStartedOnC(t)
	// Two minutes after the placement, c answers its start order.
	f.advance(2*time.Minute, "a", "b", "c", "d")
	rid := sh.Members[2].ReplicaId
	oid := startOrderID(1, 2, rid)
	f.obs.Hosts["c"].Results = map[string]*drummerpb.OrderResult{oid: {Id: oid, ShardId: 2, ReplicaId: rid, Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_DONE}}
	resultAt := map[string]map[string]time.Time{"c": {oid: f.now}}
	plan := func() *Output {
		in := f.input(true)
		in.ResultAt = resultAt
		out := Plan(in)
		f.decide(out.Decisions...)
		return out
	}
	replaced := func(out *Output) bool {
		for _, r := range startRepairs(out) {
			if r.ShardId == 2 && r.OldReplicaId == rid {
				return true
			}
		}
		return false
	}
	f.advance(10*time.Second, "a", "b", "c", "d")
	if out := plan(); replaced(out) {
		t.Fatalf("replica started 10 s ago replaced: %s", explanation(out, 2))
	}
	// It never shows up: dead_timeout after the start, it is replaced.
	f.advance(2*time.Minute, "a", "b", "c", "d")
	if out := plan(); !replaced(out) {
		t.Fatalf("replica started 2 min ago and never reported not replaced: %s", explanation(out, 2))
	}
}
