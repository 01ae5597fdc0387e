package planner

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
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
	// Every replica was added just now: within the cool-down.
	if m := balanceMoves(f.plan()); len(m) != 0 {
		t.Fatalf("moved replicas added within the cool-down: %v", m)
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
