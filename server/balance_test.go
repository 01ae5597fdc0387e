package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
)

// GetBalanceStatus answers from the scheduler Node: the settings in force
// and every registered host, a page at a time.
func TestGetBalanceStatus(t *testing.T) {
	s, c := startServer(t)
	ctx := ctxT(t)
	const hosts = 5
	deadline := time.Now().Add(30 * time.Second)
	for seq := uint64(1); ; seq++ {
		for i := range hosts {
			r := report(fmt.Sprintf("h%d", i), seq, 0)
			r.RaftAddress = fmt.Sprintf("127.0.0.1:%d", 17001+i)
			if _, err := c.Report(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		var known int
		s.sm.Read(func(st *db.State) { known = len(st.Hosts) })
		if known == hosts {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d hosts registered", known, hosts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := c.SetConfig(ctx, &drummerpb.SetConfigRequest{Values: map[string]string{"balance_leaders": "off", "max_balance_moves": "7"}}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	req := &drummerpb.GetBalanceStatusRequest{PageSize: 2}
	pages := 0
	for {
		resp, err := c.GetBalanceStatus(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		st := resp.GetSettings()
		if !st.GetReplicas() || st.GetLeaders() || st.GetMaxMoves() != 7 || st.GetThresholdPct() != db.DefaultBalanceThresholdPct ||
			st.GetCooldownMs() != uint64(db.DefaultBalanceCooldown.Milliseconds()) {
			t.Errorf("settings %v", st)
		}
		if len(resp.GetHosts()) > 2 {
			t.Errorf("page of %d hosts, asked for 2", len(resp.GetHosts()))
		}
		for _, h := range resp.GetHosts() {
			if seen[h.GetHostId()] {
				t.Errorf("host %s twice", h.GetHostId())
			}
			seen[h.GetHostId()] = true
			if h.GetRaftAddress() == "" {
				t.Errorf("host %s without an address", h.GetHostId())
			}
		}
		if resp.GetNextPageToken() == "" || pages > 10 {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if len(seen) != hosts || pages != 3 {
		t.Errorf("%d hosts in %d pages, want %d in 3", len(seen), pages, hosts)
	}
}
