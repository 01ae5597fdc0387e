package planner

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// balanceFixture has 30 healthy shards on hosts a, b and c (led by the
// replica on a) and empty hosts d and e, past the cool-down.
func balanceFixture(t *testing.T, newHosts ...string) *fixture {
	f := newFixture(t)
	for _, h := range []string{"a", "b", "c"} {
		f.host(h, "r1")
	}
	for i := uint64(1); i <= 30; i++ {
		f.shard(i, "a", "b", "c")
	}
	f.advance(2*time.Minute, "a", "b", "c")
	for _, h := range newHosts {
		f.host(h, "r1")
	}
	return f
}

func balanceMoves(out *Output) []*dbpb.StartRepair {
	var m []*dbpb.StartRepair
	for _, r := range startRepairs(out) {
		if r.Kind == dbpb.RepairKind_REPAIR_KIND_BALANCE {
			m = append(m, r)
		}
	}
	return m
}

func TestBalanceMovesReplicasToNewHosts(t *testing.T) {
	f := balanceFixture(t, "d", "e")
	out := f.plan()
	moves := balanceMoves(out)
	if len(moves) == 0 {
		t.Fatalf("no balancing move; decisions %v", kinds(out))
	}
	perTarget := map[string]int{}
	perShard := map[uint64]int{}
	for _, m := range moves {
		if m.NewHostId != "d" && m.NewHostId != "e" {
			t.Errorf("move of shard %d to %s, want d or e", m.ShardId, m.NewHostId)
		}
		perTarget[m.NewHostId]++
		perShard[m.ShardId]++
		wantContains(t, "reason", m.Reason, "balance:", "fair share 18.0")
	}
	limit := int(f.st.Config.MaxRepairsPerHost)
	for h, n := range perTarget {
		if n > limit {
			t.Errorf("%d moves to %s, above max_repairs_per_host %d", n, h, limit)
		}
	}
	for id, n := range perShard {
		if n > 1 {
			t.Errorf("shard %d: %d moves in one round", id, n)
		}
	}
	// Applied, the moves count against the limits: the next round adds
	// no more to the same hosts beyond them.
	f.decide(out.Decisions...)
	again := balanceMoves(f.plan())
	for _, m := range again {
		perTarget[m.NewHostId]++
	}
	for h, n := range perTarget {
		if n > limit {
			t.Errorf("after two rounds %d moves to %s in flight, above %d", n, h, limit)
		}
	}
}

func TestBalancedDeploymentDoesNotMove(t *testing.T) {
	f := balanceFixture(t)
	out := f.plan()
	if m := balanceMoves(out); len(m) != 0 {
		t.Fatalf("moves in a balanced deployment: %v", m)
	}
	// A new host one short of the tolerance below the share is no reason
	// to move either: with 4 hosts the share is 22.5, tolerance 2.
	f2 := newFixture(t)
	for _, h := range []string{"a", "b", "c", "d"} {
		f2.host(h, "r1")
	}
	hosts := [][]string{{"a", "b", "c"}, {"a", "b", "d"}, {"a", "c", "d"}, {"b", "c", "d"}}
	for i := uint64(1); i <= 30; i++ {
		f2.shard(i, hosts[i%4]...)
	}
	f2.advance(2*time.Minute, "a", "b", "c", "d")
	if m := balanceMoves(f2.plan()); len(m) != 0 {
		t.Fatalf("moves within the tolerance: %v", m)
	}
}

func TestBalanceWaitsWhileAHostIsDown(t *testing.T) {
	f := balanceFixture(t, "d", "e", "x")
	f.shard(31, "x", "a", "b")
	f.advance(10*time.Second, "a", "b", "c", "d", "e") // x is suspect
	in := f.input(true)
	in.Down = []string{"x"}
	out := Plan(in)
	if m := balanceMoves(out); len(m) != 0 {
		t.Fatalf("balancing moves while a host holding replicas is suspect: %v", m)
	}
	if !strings.Contains(out.BalanceWhy(), "suspect or dead") {
		t.Errorf("BalanceWhy = %q, want it to name the suspect host", out.BalanceWhy())
	}
}

// A shard that lost its quorum cannot be repaired, so its dead members are
// no repairs to wait for: before, one such shard held every balancing move
// back for good (a join after a kill that took two replicas of one shard
// never balanced).
func TestBalanceDoesNotWaitForShardsWithoutQuorum(t *testing.T) {
	f := balanceFixture(t, "d", "e", "x", "y")
	f.shard(31, "x", "y", "a")
	f.advance(10*time.Second, "a", "b", "c", "d", "e") // x and y are suspect
	in := f.input(true)
	in.Down = []string{"x", "y"}
	out := Plan(in)
	moves := balanceMoves(out)
	if len(moves) == 0 {
		t.Fatalf("no balancing move while the only down hosts hold a shard without quorum; why: %q", out.BalanceWhy())
	}
	for _, m := range moves {
		if m.ShardId == 31 {
			t.Errorf("balancing moved a replica of shard 31, which has no quorum: %v", m)
		}
	}
}

// A launch places shards a round at a time on the least loaded hosts;
// moves judged on the counts in between would be undone by the next
// placements, so balancing waits until placements stop.
func TestBalanceWaitsWhilePlacementsFlow(t *testing.T) {
	f := balanceFixture(t, "d", "e")
	f.createShard(31, 3, nil)
	out := f.plan()
	if !out.Placing {
		t.Fatalf("a round that places a shard says Placing = false; decisions %v", kinds(out))
	}
	if m := balanceMoves(out); len(m) != 0 {
		t.Fatalf("balancing moves in the round that places a shard: %v", m)
	}
	f.decide(out.Decisions...)
	in := f.input(true)
	in.PlacedAt = f.now.Add(-time.Second)
	out = Plan(in)
	if m := balanceMoves(out); len(m) != 0 {
		t.Fatalf("balancing moves a second after a placement: %v", m)
	}
	if !strings.Contains(out.BalanceWhy(), "being placed") {
		t.Errorf("BalanceWhy = %q, want it to say shards are being placed", out.BalanceWhy())
	}
	in = f.input(true)
	in.PlacedAt = f.now.Add(-placementSettle * time.Duration(f.st.Config.ReportIntervalMs) * time.Millisecond)
	if m := balanceMoves(Plan(in)); len(m) == 0 {
		t.Fatalf("no balancing move %d report intervals after the last placement", placementSettle)
	}
}

func TestBalanceOffMovesNothing(t *testing.T) {
	f := balanceFixture(t, "d", "e")
	f.setConfig(func(c *dbpb.Config) { c.BalanceReplicasOff = true })
	if m := balanceMoves(f.plan()); len(m) != 0 {
		t.Fatalf("moves with balance_replicas=off: %v", m)
	}
}

func TestRecentlyAddedReplicaIsNotMoved(t *testing.T) {
	f := newFixture(t)
	for _, h := range []string{"a", "b", "c"} {
		f.host(h, "r1")
	}
	for i := uint64(1); i <= 30; i++ {
		f.shard(i, "a", "b", "c")
	}
	f.host("d", "r1")
	f.host("e", "r1")
	// The initial replicas did not move: they may go at once.
	if m := balanceMoves(f.plan()); len(m) == 0 {
		t.Fatal("initial replicas were held back by the cool-down")
	}
	p := newPlanner(f.input(true))
	v := p.newShardView(f.st.Shards.Get(1))
	m := *v.members[0]
	rec := proto.CloneOf(m.rec)
	rec.Initial, rec.AddedUnixMs = false, f.now.Add(-30*time.Second).UnixMilli()
	m.rec = rec
	if p.movable(v, &m) {
		t.Error("a replica a repair added 30 s ago is movable within the 1-minute cool-down")
	}
	rec.AddedUnixMs = f.now.Add(-61 * time.Second).UnixMilli()
	if !p.movable(v, &m) {
		t.Error("a replica added 61 s ago is not movable after the cool-down")
	}
}

func transfers(out *Output) map[string]int {
	n := map[string]int{}
	for _, orders := range out.ShardOrders {
		for _, o := range orders {
			if tl, ok := o.Order.Kind.(*drummerpb.Order_TransferLeader); ok {
				n[fmt.Sprint(tl.TransferLeader.ToReplicaId)]++
			}
		}
	}
	return n
}

func TestLeaderBalanceSpreadsLeadership(t *testing.T) {
	f := balanceFixture(t)
	in := f.input(true)
	in.TransferBudget = 100
	out := Plan(in)
	got := transfers(out)
	// Host a leads all 30 shards, its share is 10: transfers go to the
	// replicas on b (2) and c (3), about 10 each, none back to a.
	if got["1"] != 0 || got["2"] < 8 || got["3"] < 8 || got["2"]+got["3"] > 22 {
		t.Fatalf("transfers by target replica %v, want about 10 to each of b and c", got)
	}
	if len(out.Transfers) != got["2"]+got["3"] {
		t.Errorf("Output.Transfers lists %d shards, %d transfers ordered", len(out.Transfers), got["2"]+got["3"])
	}
	// The budget bounds them, and the cool-down stops a second move.
	in.TransferBudget = 5
	if out := Plan(in); len(out.Transfers) != 5 {
		t.Errorf("%d transfers with a budget of 5", len(out.Transfers))
	}
	in.TransferBudget = 100
	in.LeaderMoves = map[uint64]time.Time{}
	for i := uint64(1); i <= 30; i++ {
		in.LeaderMoves[i] = f.now.Add(-time.Second)
	}
	if out := Plan(in); len(out.Transfers) != 0 {
		t.Errorf("%d transfers within the cool-down", len(out.Transfers))
	}
}

func TestLeadershipLeavesCordonedHost(t *testing.T) {
	f := balanceFixture(t)
	f.setConfig(func(c *dbpb.Config) { c.BalanceLeadersOff = true })
	f.admin("a", dbpb.HostAdmin_HOST_ADMIN_CORDONED)
	in := f.input(true)
	in.TransferBudget = 100
	out := Plan(in)
	if len(out.Transfers) != 30 {
		t.Fatalf("%d of 30 leaderships moved off the cordoned host", len(out.Transfers))
	}
	if got := transfers(out); got["1"] != 0 {
		t.Errorf("transfers to the cordoned host's replicas: %v", got)
	}
}

func TestDrainMovesLeadersOffFirst(t *testing.T) {
	f := balanceFixture(t, "d")
	f.admin("a", dbpb.HostAdmin_HOST_ADMIN_DRAINING)
	in := f.input(true)
	in.TransferBudget = 100
	out := Plan(in)
	moves := 0
	for _, r := range startRepairs(out) {
		if r.Kind == dbpb.RepairKind_REPAIR_KIND_MOVE {
			moves++
		}
	}
	// Moves are bounded by the per-host limit on d; every leadership
	// leaves a at once.
	if moves == 0 || moves >= 30 {
		t.Errorf("%d drain moves started, want some but not all 30", moves)
	}
	if len(out.Transfers) != 30 {
		t.Errorf("%d of 30 leaderships moved off the draining host", len(out.Transfers))
	}
}

func TestOrderIDs(t *testing.T) {
	for _, c := range []struct {
		id   string
		kind OrderKind
	}{
		{startOrderID(3, 7, 9), OrderStart},
		{stopOrderID(3, 7, 9), OrderStop},
		{ccOrderID(3, 7, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_PROMOTE, 9, 12), OrderConfigChange},
		{transferOrderID(3, 7, 1, 2), OrderTransfer},
		{"3/bogus/7", OrderUnknown},
		{"", OrderUnknown},
	} {
		if got := OrderKindOf(c.id); got != c.kind {
			t.Errorf("OrderKindOf(%q) = %s, want %s", c.id, got, c.kind)
		}
	}
	if id := stopOrderID(3, 7, 9); id != "3/stop/7/9" {
		t.Errorf("stop order ID %q, want 3/stop/7/9 (agents and the sim read it)", id)
	}
}

func TestShardStaysHealthyThroughABalancingMove(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	health := func(step string) {
		t.Helper()
		out := f.plan()
		if h := out.Shards[1].Health; h != "healthy" {
			t.Errorf("%s: health %s, want healthy: %s", step, h, explanation(out, 1))
		}
	}
	f.repairTo(dbpb.RepairKind_REPAIR_KIND_BALANCE, "d", 3, dbpb.RepairStep_REPAIR_STEP_ADD_NON_VOTING)
	health("add_non_voting")
	all := map[uint64]string{1: f.addr["a"], 2: f.addr["b"], 3: f.addr["c"]}
	f.membership(1, 11, all, map[uint64]string{4: f.addr["d"]})
	f.run(1, 4, "d", 1, drummerpb.ReplicaRole_REPLICA_ROLE_NON_VOTING)
	f.stepTo(dbpb.RepairStep_REPAIR_STEP_PROMOTE)
	health("promote")
	all[4] = f.addr["d"]
	f.membership(1, 12, all, nil)
	f.run(1, 4, "d", 1, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
	f.stepTo(dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD)
	health("remove_old, old replica still a voter")
	delete(all, 3)
	f.membership(1, 13, all, nil, 3)
	health("remove_old, old replica out of the membership")
	// A member that dies mid-move makes the shard unhealthy; before the
	// removal step that would roll the move back (repairs first).
	f.advance(31*time.Second, "a", "c", "d")
	if h := f.plan().Shards[1].Health; h == "healthy" {
		t.Errorf("healthy with replica 2 dead")
	}
}

// stepTo advances shard 1's repair to step.
func (f *fixture) stepTo(step dbpb.RepairStep) {
	f.t.Helper()
	for r := f.st.Shards.Get(1).Repair; r.Step != step; r = f.st.Shards.Get(1).Repair {
		f.decide(&dbpb.Decision{Kind: &dbpb.Decision_AdvanceRepair{AdvanceRepair: &dbpb.AdvanceRepair{
			ShardId: 1, RepairId: r.Id, From: r.Step, To: db.NextStep(r.Kind, r.Step)}}})
	}
}

func TestFailedBalanceMoveIsNotRetriedWithinTheCooldown(t *testing.T) {
	f := balanceFixture(t, "d", "e")
	out := f.plan()
	moves := balanceMoves(out)
	if len(moves) == 0 {
		t.Fatal("no balancing move")
	}
	sid := moves[0].ShardId
	f.decide(out.Decisions...)
	r := f.st.Shards.Get(sid).Repair
	f.decide(&dbpb.Decision{Kind: &dbpb.Decision_FinishRepair{FinishRepair: &dbpb.FinishRepair{
		ShardId: sid, RepairId: r.Id, Outcome: dbpb.RepairOutcome_REPAIR_OUTCOME_FAILED, Reason: "test"}}})
	f.advance(5*time.Second, "a", "b", "c", "d", "e")
	for _, m := range balanceMoves(f.plan()) {
		if m.ShardId == sid {
			t.Fatalf("shard %d moved again 5 s after its balancing move failed", sid)
		}
	}
	f.advance(2*time.Minute, "a", "b", "c", "d", "e")
	again := false
	for _, m := range balanceMoves(f.plan()) {
		again = again || m.ShardId == sid
	}
	if !again {
		t.Errorf("shard %d not balanced after the cool-down", sid)
	}
}

func TestBalanceKeepsTheSpreadOverRegions(t *testing.T) {
	f := newFixture(t)
	for h, r := range map[string]string{"a": "r1", "b": "r2", "c": "r3", "d": "r1", "e": "r2"} {
		f.host(h, r)
	}
	// Placement spread every shard over the three regions: the lone host
	// of r3 holds a replica of each (6), the others 3.
	for i := uint64(1); i <= 6; i++ {
		if i%2 == 0 {
			f.shard(i, "a", "b", "c")
		} else {
			f.shard(i, "d", "e", "c")
		}
	}
	if m := balanceMoves(f.plan()); len(m) != 0 {
		t.Fatalf("balancing moved replicas off the lone host of a region: %v", m)
	}
}
