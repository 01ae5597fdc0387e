package cli

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// convergingFake has 4 shards that become healthy one poll at a time:
// poll n has n-1 healthy shards (at most 4).
func convergingFake() *fakeDrummer {
	f := newFake()
	f.listShards = func(n int, _ *drummerpb.ListShardsRequest) []*drummerpb.ShardStatus {
		health := []string{"under_replicated", "pending", "pending", "unavailable"}
		var out []*drummerpb.ShardStatus
		for i, h := range health {
			if i < n-1 {
				h = "healthy"
			}
			out = append(out, shardWithHealth(uint64(i+1), h))
		}
		return out
	}
	return f
}

func TestWaitHealthyNonTTY(t *testing.T) {
	f := convergingFake()
	r := runAt(t, serve(t, f), "wait", "--healthy", "--interval", "5ms")
	r.wantCode(t, 0)
	want := []string{
		"0/4 shards healthy (1 under_replicated, 1 unavailable, 2 pending)",
		"1/4 shards healthy (1 unavailable, 2 pending)",
		"2/4 shards healthy (1 unavailable, 1 pending)",
		"3/4 shards healthy (1 unavailable)",
		"4/4 shards healthy",
	}
	if got := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n"); !slices.Equal(got, want) {
		t.Errorf("progress:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(r.stdout, "\r") || strings.Contains(r.stdout, "\x1b") {
		t.Errorf("control characters without a terminal: %q", r.stdout)
	}
}

func TestWaitHealthyTTY(t *testing.T) {
	f := convergingFake()
	r := runCLI(t, runOpts{tty: true}, "--endpoints", serve(t, f), "wait", "--healthy", "--interval", "5ms")
	r.wantCode(t, 0)
	want := "\r0/4 shards healthy (1 under_replicated, 1 unavailable, 2 pending)\x1b[K" +
		"\r1/4 shards healthy (1 unavailable, 2 pending)\x1b[K" +
		"\r2/4 shards healthy (1 unavailable, 1 pending)\x1b[K" +
		"\r3/4 shards healthy (1 unavailable)\x1b[K" +
		"\r4/4 shards healthy\x1b[K\n"
	if r.stdout != want {
		t.Errorf("tty output %q\nwant %q", r.stdout, want)
	}
}

func TestWaitHealthyJSON(t *testing.T) {
	f := convergingFake()
	r := runAt(t, serve(t, f), "-o", "json", "wait", "--healthy", "--interval", "5ms")
	r.wantCode(t, 0)
	var got waitResultJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !got.Healthy || got.Total != 4 || got.Health["healthy"] != 4 {
		t.Errorf("stdout must be one JSON document: %q (%v)", r.stdout, err)
	}
	wantContains(t, "stderr (progress)", r.stderr, "0/4 shards healthy", "4/4 shards healthy")
}

func TestWaitHealthyTimeout(t *testing.T) {
	f := newFake()
	f.shards = []*drummerpb.ShardStatus{healthyShard(1), shardWithHealth(2, "under_replicated"), shardWithHealth(3, "pending")}
	r := runAt(t, serve(t, f), "wait", "--healthy", "--timeout", "100ms", "--interval", "10ms")
	r.wantCode(t, ExitUnavailable)
	wantContains(t, "stdout", r.stdout, "1/3 shards healthy (1 under_replicated, 1 pending)\n")
	wantContains(t, "stderr", r.stderr,
		"Error: shards not healthy: timed out after 100ms: 1/3 shards healthy (1 under_replicated, 1 pending)",
		"Hint: shard 2 is under_replicated: replica 3 on 10.0.0.3:7001 dead for 5m0s",
		"Hint: shard 3 is pending")
}

func TestWaitHealthySelection(t *testing.T) {
	f := newFake()
	f.shards = []*drummerpb.ShardStatus{healthyShard(1), healthyShard(2), shardWithHealth(3, "unavailable")}
	addr := serve(t, f)
	r := runAt(t, addr, "wait", "--healthy", "--shards", "1-2", "--interval", "5ms")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "2/2 shards healthy")
	if req := f.lastReq("ListShards").(*drummerpb.ListShardsRequest); !slices.Equal(req.ShardIds, []uint64{1, 2}) {
		t.Errorf("sent %v", req)
	}
	r = runAt(t, addr, "wait", "--healthy", "--shards", "2,8-9", "--interval", "5ms")
	r.wantCode(t, ExitNotFound)
	wantContains(t, "stderr", r.stderr, "shards 8-9 do not exist")
	r = runAt(t, addr, "wait", "--healthy", "--shards", "0")
	r.wantCode(t, ExitUsage)
	r = runAt(t, addr, "wait", "--healthy", "--timeout", "0s")
	r.wantCode(t, ExitUsage)
	f.setErr("ListShards", status.Error(codes.NotFound, "shard 8 not found"))
	r = runAt(t, addr, "wait", "--healthy", "--shards", "8")
	r.wantCode(t, ExitNotFound)
}

func TestWaitHealthyEmpty(t *testing.T) {
	f := newFake()
	addr := serve(t, f)
	r := runAt(t, addr, "wait", "--healthy", "--timeout", "60ms", "--interval", "10ms")
	r.wantCode(t, ExitUnavailable)
	wantContains(t, "stdout", r.stdout, "no shards defined yet (use --allow-empty to accept none)")
	r = runAt(t, addr, "wait", "--healthy", "--allow-empty")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "no shards defined")
}

func TestWaitHealthyRidesOutFailover(t *testing.T) {
	// No leader for a while: each call is retried by the client until
	// --command-timeout, then the wait shows it and polls on.
	f := convergingFake()
	f.errs["GetClusterInfo"] = status.Error(codes.Unavailable, "leader changed")
	f.errUntil["GetClusterInfo"] = time.Now().Add(500 * time.Millisecond)
	r := runCLI(t, runOpts{}, "--endpoints", serve(t, f), "--command-timeout", "200ms", "wait", "--healthy", "--interval", "5ms")
	r.wantCode(t, 0)
	wantContains(t, "stdout", r.stdout, "waiting for the drummer leader (get cluster info: no drummer leader answered", "4/4 shards healthy")

	// Other errors end the wait at once.
	f = convergingFake()
	f.errs["GetClusterInfo"] = status.Error(codes.PermissionDenied, "no")
	r = runAt(t, serve(t, f), "wait", "--healthy", "--interval", "5ms")
	r.wantCode(t, ExitPermission)
}
