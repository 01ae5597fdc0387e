package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// Every report queued when a round is due is taken before the round, so
// liveness never judges a host by a report that waits in the queue (at
// 10,000 hosts one batch left seconds of reports behind, and the round
// judged 1,300 reporting hosts suspect).
func TestReportsQueuedBeforeARoundAreTaken(t *testing.T) {
	l := newLoop(&Server{started: time.Now()})
	n := 3*drainBatch + 17
	at := time.Now()
	for i := range n {
		l.reports <- reportIn{r: &drummerpb.ReportRequest{HostId: fmt.Sprintf("h%05d", i), Session: 1, Full: true}, at: at}
	}
	l.drainAll()
	if left := len(l.reports); left != 0 {
		t.Fatalf("%d of %d reports still queued", left, n)
	}
	if got := l.node.LastHeard(fmt.Sprintf("h%05d", n-1)); !got.Equal(at) {
		t.Fatalf("last host heard at %v, want %v", got, at)
	}
}
