package server

import (
	"fmt"
	"testing"

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
