package cli

import (
	"encoding/json"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func balanceFixture(hosts int) *drummerpb.GetBalanceStatusResponse {
	b := &drummerpb.GetBalanceStatusResponse{
		Settings: &drummerpb.BalanceSettings{Replicas: true, Leaders: true, ThresholdPct: 5, MinExcess: 2,
			MaxMoves: 64, MaxLeaderTransfers: 50, CooldownMs: 60_000},
		MovesInFlight: 2, LeaderTransfersRecent: 1,
	}
	for i := range hosts {
		h := &drummerpb.BalanceHost{
			HostId: fmt.Sprintf("%08d-aaaa-bbbb-cccc-dddddddddddd", i+1), RaftAddress: fmt.Sprintf("10.0.0.%d:7001", i+1),
			Replicas: 18, ReplicaTarget: 18, Leaders: 6, LeaderTarget: 6,
		}
		if i == 0 {
			h.Replicas, h.Leaders, h.MovesOut, h.Explanation = 30, 10, 2, "moving 2 replicas off (limit max_balance_moves)"
		}
		if i == 3 {
			h.Replicas, h.LeaderTarget, h.MovesIn = 0, 2.5, 2
		}
		b.Hosts = append(b.Hosts, h)
	}
	return b
}

func TestBalanceStatus(t *testing.T) {
	f := newFake()
	f.balance = balanceFixture(5)
	addr := serve(t, f)
	r := runAt(t, addr, "balance", "status")
	r.wantCode(t, 0)
	want := `Replica balancing:  on
Leader balancing:   on
Threshold:          5% of the target, at least 2 replicas
Limits:             64 moves in flight, 50 leader transfers/s, cool-down 1m
Moves in flight:    2
Leader transfers:   1 recently

HOST      ADDRESS        REPLICAS  TARGET  LEADERS  TARGET  MOVES IN/OUT  WHY
00000001  10.0.0.1:7001  30        18.0    10       6.0     0/2           moving 2 replicas off (limit max_balance_moves)
00000002  10.0.0.2:7001  18        18.0    6        6.0     0/0           -
00000003  10.0.0.3:7001  18        18.0    6        6.0     0/0           -
00000004  10.0.0.4:7001  0         18.0    6        2.5     2/0           -
00000005  10.0.0.5:7001  18        18.0    6        6.0     0/0           -
`
	if r.stdout != want {
		t.Errorf("balance status:\n%s\nwant:\n%s", r.stdout, want)
	}

	// Why nothing moves is said before the table.
	f.balance.Explanation = "balancing waits: 3 repairs in flight"
	r = runAt(t, addr, "balance", "status")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "Why nothing moves:  balancing waits: 3 repairs in flight\n\nHOST")

	r = runAt(t, addr, "balance", "status", "-o", "json")
	r.wantCode(t, 0)
	var got balanceJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Hosts) != 5 || got.Hosts[0].Replicas != 30 || got.Hosts[3].LeaderTarget != 2.5 || got.Hosts[3].MovesIn != 2 ||
		!got.Settings.Replicas || got.Settings.CooldownMs != 60_000 || got.MovesInFlight != 2 || got.Truncated {
		t.Errorf("json %+v", got)
	}
	wantContains(t, "json", r.stdout, `"settings": {`, `"threshold_pct": 5`, `"max_leader_transfers": 50`,
		`"moves_in_flight": 2`, `"leader_transfers_recent": 1`, `"explanation": "balancing waits: 3 repairs in flight"`,
		`"host_id": "00000001-aaaa-bbbb-cccc-dddddddddddd"`, `"replica_target": 18`, `"moves_out": 2`)
}

// Hosts come a page at a time; --limit stops early and says so.
func TestBalanceStatusPages(t *testing.T) {
	f := newFake()
	f.balance = balanceFixture(1203)
	addr := serve(t, f)
	r := runAt(t, addr, "balance", "status", "-o", "json")
	r.wantCode(t, 0)
	var got balanceJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Hosts) != 1203 || got.Truncated || f.called("GetBalanceStatus") != 3 {
		t.Errorf("%d hosts in %d calls, truncated %v", len(got.Hosts), f.called("GetBalanceStatus"), got.Truncated)
	}
	for i := 1; i < len(got.Hosts); i++ {
		if got.Hosts[i].HostID <= got.Hosts[i-1].HostID {
			t.Fatalf("host %d out of order", i)
		}
	}

	n := f.called("GetBalanceStatus")
	r = runAt(t, addr, "balance", "status", "--limit", "3")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "00000003", "(first 3 hosts shown; raise --limit for more)")
	if f.called("GetBalanceStatus") != n+1 {
		t.Errorf("--limit 3 took %d calls", f.called("GetBalanceStatus")-n)
	}
	if req := f.lastReq("GetBalanceStatus").(*drummerpb.GetBalanceStatusRequest); req.PageSize != 3 {
		t.Errorf("page size %d, want 3", req.PageSize)
	}
	r = runAt(t, addr, "balance", "status", "--limit", "1203", "-o", "json")
	r.wantCode(t, 0)
	got = balanceJSON{}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.Hosts) != 1203 || got.Truncated {
		t.Errorf("--limit 1203: %d hosts, truncated %v, %v", len(got.Hosts), got.Truncated, err)
	}

	r = runAt(t, addr, "balance", "status", "--limit", "-1")
	r.wantCode(t, ExitUsage)
	r = runAt(t, addr, "balance", "status", "extra")
	r.wantCode(t, ExitUsage)
	r = runAt(t, addr, "balance")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "status")

	f.setErr("GetBalanceStatus", status.Error(codes.PermissionDenied, "role app may not"))
	r = runAt(t, addr, "balance", "status")
	r.wantCode(t, ExitPermission)
	wantContains(t, "stderr", r.stderr, "get balance status")
}
