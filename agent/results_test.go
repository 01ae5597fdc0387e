package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drummerhq/drummer/agent/nodehostapi/nhtest"
	"github.com/drummerhq/drummer/api/drummerpb"
)

func leaderTransfer(id string, epoch uint64) *drummerpb.Order {
	return &drummerpb.Order{Id: id, Epoch: epoch, Kind: &drummerpb.Order_TransferLeader{TransferLeader: &drummerpb.TransferLeaderOrder{ShardId: 1, ToReplicaId: 2}}}
}

// An order refused on sight (its epoch differs from its reply's) comes
// with every reply; its result is kept once, not once per reply (which
// grew the reports past the drummer's limit within minutes).
func TestRefusedOrderResultsAreNotDuplicated(t *testing.T) {
	e := newExecutor(testAgent(t))
	for range 100 {
		e.submit(6, []*drummerpb.Order{leaderTransfer("5/a", 5), leaderTransfer("5/b", 5)})
	}
	if res, _ := e.resultsSince(0); len(res) != 2 {
		t.Fatalf("%d results for 2 refused orders sent 100 times", len(res))
	}
}

// However many results pile up, a report carries a bounded number, the
// oldest first, and successive reports carry the rest in order.
func TestReportResultsAreBounded(t *testing.T) {
	e := newExecutor(testAgent(t))
	const n = 3*maxReportResults + 17
	e.mu.Lock()
	for i := range n {
		e.record(&drummerpb.OrderResult{Id: fmt.Sprintf("o-%d", i), Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_DONE})
	}
	e.mu.Unlock()
	var seen int
	var seq uint64
	for range 10 {
		res, next := e.resultsSince(seq)
		if len(res) > maxReportResults {
			t.Fatalf("one report carries %d results", len(res))
		}
		for _, r := range res {
			if want := fmt.Sprintf("o-%d", seen); r.Id != want {
				t.Fatalf("result %s, want %s", r.Id, want)
			}
			seen++
		}
		seq = next
	}
	if seen != n {
		t.Fatalf("reports carried %d of %d results", seen, n)
	}
	// The kept results are bounded too.
	e.mu.Lock()
	for i := range 2 * maxResults {
		e.record(&drummerpb.OrderResult{Id: fmt.Sprintf("p-%d", i), Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_DONE})
	}
	kept := len(e.results)
	e.mu.Unlock()
	if kept > maxResults {
		t.Fatalf("%d results kept", kept)
	}
}

// The epoch fence survives a restart: an agent that took orders of epoch 7
// still refuses epoch 5's (a deposed leader's) after it restarts.
func TestEpochFenceSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	st, err := loadStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := testAgent(t)
	a.store = st
	newExecutor(a).submit(7, []*drummerpb.Order{leaderTransfer("7/a", 7)})
	if err := st.flush(); err != nil {
		t.Fatal(err)
	}
	// Restart.
	st2, err := loadStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	a2 := testAgent(t)
	a2.store = st2
	e := newExecutor(a2)
	e.submit(5, []*drummerpb.Order{leaderTransfer("5/b", 5)})
	if len(e.queue) != 0 || e.epochSeen() != 7 {
		t.Fatalf("after a restart: %d orders of the deposed epoch 5 queued, epoch seen %d (want 7)", len(e.queue), e.epochSeen())
	}
}

// Two initial members on one address are refused before dragonboat sees
// them.
func TestStartOrderWithDuplicateMemberAddressesIsRejected(t *testing.T) {
	e := newExecutor(testAgent(t))
	o := &drummerpb.Order{Id: "x", Kind: &drummerpb.Order_Start{Start: &drummerpb.StartReplicaOrder{ShardId: 1, ReplicaId: 1, App: "kv",
		Config:         &drummerpb.ShardConfig{ElectionRtt: 10, HeartbeatRtt: 1},
		InitialMembers: map[uint64]string{1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 3: "127.0.0.1:7002"}}}}
	r := e.execute(context.Background(), o)
	if r.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED || !strings.Contains(r.Error, "share the address") {
		t.Fatalf("%v: %s", r.Outcome, r.Error)
	}
}

// Dragonboat panics, killing the nodehost, when a membership change gives
// a replica another address than the one it registered for it earlier
// (here from a stopped replica's initial members); found by
// FuzzOrderExecutor. The agent refuses such an order.
func TestConflictingReplicaAddressIsRefused(t *testing.T) {
	c := nhtest.New(t, nhtest.Options{Hosts: 1, RTTMillisecond: 5})
	h := c.Hosts[0]
	a := testAgent(t)
	a.cfg.RaftAddress, a.nh = h.RaftAddr, h.NH
	a.col = newCollector(a)
	e := newExecutor(a)
	cfg := &drummerpb.ShardConfig{ElectionRtt: 10, HeartbeatRtt: 1}
	start := func(replica uint64, members map[uint64]string) *drummerpb.OrderResult {
		return e.execute(context.Background(), &drummerpb.Order{Kind: &drummerpb.Order_Start{Start: &drummerpb.StartReplicaOrder{
			ShardId: 1, ReplicaId: replica, App: "kv", Config: cfg, InitialMembers: members}}})
	}
	if r := start(1, map[uint64]string{1: h.RaftAddr, 3: "127.0.0.1:1"}); r.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
		t.Fatalf("start: %v %s", r.Outcome, r.Error)
	}
	if err := h.NH.StopShard(1); err != nil {
		t.Fatal(err)
	}
	a.store.unassign(1, 1)
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.NH.SyncRemoveData(rctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	// Replica 3, given 127.0.0.1:1 above, now at this host: bootstrapping
	// would register the second address.
	r := start(3, map[uint64]string{3: h.RaftAddr})
	if r.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED || !strings.Contains(r.Error, "address") {
		t.Fatalf("conflicting address: %v %s", r.Outcome, r.Error)
	}
	time.Sleep(500 * time.Millisecond) // a panic in dragonboat's apply goroutine would end the test binary here
}

// A replica stopped here is not started again at once: dragonboat panics
// ("from two incarnations found") when the new incarnation starts while the
// old one is still loaded in its workers; found by FuzzOrderExecutor.
func TestReplicaIsNotRestartedRightAfterAStop(t *testing.T) {
	c := nhtest.New(t, nhtest.Options{Hosts: 1, RTTMillisecond: 5})
	h := c.Hosts[0]
	a := testAgent(t)
	a.cfg.RaftAddress, a.nh = h.RaftAddr, h.NH
	a.col = newCollector(a)
	e := newExecutor(a)
	st := &drummerpb.Order{Kind: &drummerpb.Order_Start{Start: &drummerpb.StartReplicaOrder{ShardId: 1, ReplicaId: 1, App: "kv",
		Config: &drummerpb.ShardConfig{ElectionRtt: 10, HeartbeatRtt: 1}, InitialMembers: map[uint64]string{1: h.RaftAddr}}}}
	if r := e.execute(context.Background(), st); r.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
		t.Fatalf("start: %v %s", r.Outcome, r.Error)
	}
	stop := &drummerpb.Order{Kind: &drummerpb.Order_Stop{Stop: &drummerpb.StopReplicaOrder{ShardId: 1, ReplicaId: 1}}}
	if r := e.execute(context.Background(), stop); r.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
		t.Fatalf("stop: %v %s", r.Outcome, r.Error)
	}
	r := e.execute(context.Background(), st)
	if r.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_FAILED || !strings.Contains(r.Error, "was stopped") {
		t.Fatalf("restart right after the stop: %v %s", r.Outcome, r.Error)
	}
}
