package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/scheduler"
)

func report(hostID string, seq uint64, results int) *drummerpb.ReportRequest {
	r := &drummerpb.ReportRequest{HostId: hostID, RaftAddress: "127.0.0.1:17001", ApiAddress: "127.0.0.1:18001",
		Apps: []string{"kv"}, Session: 7, Seq: seq, Full: true}
	for i := range results {
		r.Results = append(r.Results, &drummerpb.OrderResult{Id: fmt.Sprintf("o-%d", i),
			Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED, Error: "order epoch 3 differs from its reply's epoch 4"})
	}
	return r
}

// A report carrying more order results than the server takes at once is
// taken in part (the host is heard from, its replicas recorded) and the
// agent is told how many to send again; refusing it made a live host with
// a backlog of results look dead, and every replica on it was repaired
// away.
func TestOversizedReportDegrades(t *testing.T) {
	s, c := startServer(t)
	ctx := ctxT(t)
	req := report("h1", 1, scheduler.MaxReportResults+1234)
	req.Replicas = []*drummerpb.ReplicaReport{{ShardId: 5, ReplicaId: 1}}
	resp, err := c.Report(ctx, req)
	if err != nil {
		t.Fatalf("a report with %d results was refused: %v", len(req.Results), err)
	}
	if resp.ResultsLeft != 1234 {
		t.Fatalf("results_left %d, want 1234", resp.ResultsLeft)
	}
	if s.loop.lastHeard(ctx, "h1").IsZero() {
		t.Fatal("the host was not heard from")
	}
	var (
		nres int
		rep  *drummerpb.ReplicaReport
	)
	if err := s.loop.do(ctx, func(n *scheduler.Node) {
		h := n.Observed().Hosts["h1"]
		nres, rep = len(h.Results), h.Replicas[5]
	}); err != nil {
		t.Fatal(err)
	}
	if nres != scheduler.MaxReportResults || rep == nil {
		t.Fatalf("took %d results (want %d) and replica %v", nres, scheduler.MaxReportResults, rep)
	}
	// The rest comes with the next report.
	resp, err = c.Report(ctx, report("h1", 2, 10))
	if err != nil || resp.ResultsLeft != 0 {
		t.Fatalf("next report: %v, left %d", err, resp.GetResultsLeft())
	}
}

// A report that names the orders the agent holds gets orders_unchanged
// and no list while they are still the orders in force; any other name
// gets the list. At 100 replicas per host the list came with every report
// of a launch, and marshalling it was a fifth of the leader's CPU.
func TestReportNamingHeldOrdersGetsUnchanged(t *testing.T) {
	_, c := startServer(t)
	ctx := ctxT(t)
	if _, err := c.CreateShards(ctx, &drummerpb.CreateShardsRequest{FirstShardId: 1, Count: 1, App: "kv", Replicas: 3, AllowPending: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Launch(ctx, &drummerpb.LaunchRequest{}); err != nil {
		t.Fatal(err)
	}
	seq := map[string]uint64{}
	send := func(h string, epoch, version uint64) *drummerpb.ReportResponse {
		t.Helper()
		seq[h]++
		req := report(h, seq[h], 0)
		req.RaftAddress = "127.0.0.1:1700" + h[1:]
		req.OrdersEpoch, req.OrdersVersion = epoch, version
		resp, err := c.Report(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var got *drummerpb.ReportResponse
	deadline := time.Now().Add(20 * time.Second)
	for got == nil {
		if time.Now().After(deadline) {
			t.Fatal("no start order for h1 within 20 s")
		}
		for _, h := range []string{"h2", "h3", "h1"} {
			if r := send(h, 0, 0); h == "h1" && len(r.Orders) > 0 {
				got = r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got.OrdersVersion == 0 || got.OrdersUnchanged {
		t.Fatalf("orders sent without a version, or as unchanged: %v", got)
	}
	unchanged := 0
	for range 20 {
		r := send("h1", got.Epoch, got.OrdersVersion)
		switch {
		case r.OrdersVersion == got.OrdersVersion:
			if !r.OrdersUnchanged || len(r.Orders) != 0 {
				t.Fatalf("the held orders' version came back without unchanged: %v", r)
			}
			unchanged++
		case r.OrdersUnchanged:
			t.Fatalf("unchanged for version %d when %d was held", r.OrdersVersion, got.OrdersVersion)
		default:
			got = r // a round posted new orders: hold those
		}
	}
	if unchanged == 0 {
		t.Fatal("no report got orders_unchanged")
	}
	for _, name := range []struct{ epoch, version uint64 }{{got.Epoch, got.OrdersVersion + 1}, {got.Epoch + 1, got.OrdersVersion}, {0, 0}} {
		if r := send("h1", name.epoch, name.version); r.OrdersUnchanged || (r.OrdersVersion != 0) != (len(r.Orders) > 0) {
			t.Fatalf("orders named %v: %v", name, r)
		}
	}
}
