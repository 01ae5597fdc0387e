package agent

import (
	"context"
	"testing"
	"time"

	"github.com/drummerhq/drummer/agent/nodehostapi/nhtest"
	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/kv"
)

// TestRemoveDataNeverForAMember: an order to delete the data of a replica
// that the host's own dragonboat still shows as a member is refused, and
// the replica keeps running; once the shard removed it, the same order
// deletes its data.
func TestRemoveDataNeverForAMember(t *testing.T) {
	c := nhtest.New(t, nhtest.Options{RTTMillisecond: 10})
	c.StartShard(1, kv.NewStateMachine, nhtest.ShardOptions{})
	c.WaitLeader(1)
	agentOn := func(i int) *executor {
		a := testAgent(t)
		a.nh = c.Hosts[i].NH
		a.col = newCollector(a)
		return newExecutor(a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	e := agentOn(0)
	res := e.stop(ctx, &drummerpb.StopReplicaOrder{ShardId: 1, ReplicaId: 1, RemoveData: true})
	// Right after the election the membership read may fail ("shard not
	// ready"): the agent then refuses to delete (FAILED) and the order is
	// retried, as the scheduler would.
	for res.Outcome == drummerpb.OrderOutcome_ORDER_OUTCOME_FAILED && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		res = e.stop(ctx, &drummerpb.StopReplicaOrder{ShardId: 1, ReplicaId: 1, RemoveData: true})
	}
	if res.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED || res.Membership == nil {
		t.Fatalf("delete of a member's data: %v", res)
	}
	if !c.Hosts[0].NH.HasNodeInfo(1, 1) {
		t.Fatal("a member's data was deleted")
	}
	if id, ok := e.running(1); !ok || id != 1 {
		t.Fatal("the member was stopped")
	}

	// Remove replica 3 from the shard; it stops itself, then its data may go.
	for {
		m, err := c.Hosts[0].NH.SyncGetShardMembership(ctx, 1)
		if err == nil {
			if err = c.Hosts[0].NH.SyncRequestDeleteReplica(ctx, 1, 3, m.ConfigChangeID); err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e3 := agentOn(2)
	for {
		res = e3.stop(ctx, &drummerpb.StopReplicaOrder{ShardId: 1, ReplicaId: 3, RemoveData: true})
		if res.Outcome == drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("removed replica's data not deleted: %v", res)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c.Hosts[2].NH.HasNodeInfo(1, 3) {
		t.Fatal("data of the removed replica still there")
	}
}

func TestDestructiveOrdersOnlyFromTheEpochHolder(t *testing.T) {
	var g epochHolder
	for _, c := range []struct {
		epoch uint64
		ep    string
		ok    bool
	}{
		{5, "a", true},
		{5, "a", true},
		{5, "b", false}, // a second server claiming the same epoch
		{4, "a", false}, // a deposed epoch
		{6, "b", true},  // a new leader
		{6, "a", false},
	} {
		if ok, why := g.verify(false, c.epoch, c.ep, nil); ok != c.ok {
			t.Errorf("epoch %d from %s: %v (%s), want %v", c.epoch, c.ep, ok, why, c.ok)
		}
	}
	if ok, _ := g.verify(true, 7, "b", nil); ok {
		t.Error("secure mode accepted a reply without a verified peer")
	}
	e := newExecutor(testAgent(t))
	orders := []*drummerpb.Order{
		{Id: "1", Kind: &drummerpb.Order_Stop{Stop: &drummerpb.StopReplicaOrder{ShardId: 1, ReplicaId: 2, RemoveData: true}}},
		{Id: "2", Kind: &drummerpb.Order_Stop{Stop: &drummerpb.StopReplicaOrder{ShardId: 1, ReplicaId: 2}}},
		{Id: "3", Kind: &drummerpb.Order_TransferLeader{TransferLeader: &drummerpb.TransferLeaderOrder{ShardId: 1, ToReplicaId: 2}}},
	}
	kept := e.filterUnverified(orders, "test")
	if len(kept) != 2 || kept[0].Id != "2" {
		t.Fatalf("kept %v", kept)
	}
	res, _ := e.resultsSince(0)
	if len(res) != 1 || res[0].Id != "1" || res[0].Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED {
		t.Fatalf("results %v", res)
	}
}
