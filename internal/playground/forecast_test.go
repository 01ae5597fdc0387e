package playground

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func testWorld(now time.Time) *world {
	hb := now.Add(-500 * time.Millisecond).UnixMilli()
	h := func(id, state, admin string) *drummerpb.HostStatus {
		return &drummerpb.HostStatus{Id: id, RaftAddress: "addr-" + id, State: state, AdminState: admin, Apps: []string{"kv"}, LastHeartbeatUnixMs: hb}
	}
	m := func(id string) *drummerpb.MemberStatus {
		return &drummerpb.MemberStatus{HostId: id, RaftAddress: "addr-" + id, Role: "voter"}
	}
	sh := func(id uint64, ms ...*drummerpb.MemberStatus) *drummerpb.ShardStatus {
		return &drummerpb.ShardStatus{ShardId: id, App: "kv", Members: ms}
	}
	return &world{
		cfg: &drummerpb.RuntimeConfig{ReportIntervalMs: 500, SuspectTimeoutMs: 2000, DeadTimeoutMs: 6000,
			ShardOverrides: map[uint64]*drummerpb.ShardTimeouts{1: {DeadTimeoutMs: 20000}}},
		hosts: []*drummerpb.HostStatus{
			h("a", "up", "active"), h("b", "up", "active"), h("c", "up", "active"),
			h("d", "up", "active"), h("e", "dead", "active"), h("f", "up", "cordoned"),
		},
		shards: []*drummerpb.ShardStatus{
			sh(1, m("a"), m("b"), m("c")), // healthy elsewhere, d can take it
			sh(2, m("a"), m("b"), m("e")), // e is dead: without a, no quorum
			sh(3, m("a")),                 // a single replica: gone for good with a's data
			sh(4, m("a"), m("b"), m("c"), m("d")),
			sh(5, m("b"), m("c"), m("d")), // not on a
		},
		down: map[string]bool{},
		now:  now,
	}
}

func TestImpact(t *testing.T) {
	w := testWorld(time.Now())
	im := w.impactOf("a")
	if !slices.Equal(im.shards, []uint64{1, 2, 3, 4}) {
		t.Errorf("shards %v", im.shards)
	}
	if !slices.Equal(im.unavailable, []uint64{2, 3}) {
		t.Errorf("unavailable %v", im.unavailable)
	}
	if !slices.Equal(im.lost, []uint64{3}) {
		t.Errorf("lost %v", im.lost)
	}
	// Shard 4 has replicas on every active up host (f is cordoned).
	if !slices.Equal(im.stuck, []uint64{4}) {
		t.Errorf("stuck %v", im.stuck)
	}
	if im.ownDead[1] != 20*time.Second || len(im.ownDead) != 1 {
		t.Errorf("own dead timeouts %v", im.ownDead)
	}
	// A host the playground stopped counts as gone, and cannot take a
	// replica.
	w.down["d"] = true
	im = w.impactOf("a")
	if !slices.Equal(im.stuck, []uint64{1}) {
		t.Errorf("stuck with d stopped: %v", im.stuck)
	}
	// Shard 4's four voters need three: b and c are not enough.
	if !slices.Equal(im.unavailable, []uint64{2, 3, 4}) {
		t.Errorf("unavailable with d stopped: %v", im.unavailable)
	}
}

func TestLossLines(t *testing.T) {
	now := time.Now()
	w := testWorld(now)
	text := strings.Join(w.lossLines(1, "a", "host 1"), "\n")
	for _, want := range []string{
		"in 2 s   host 1 is suspect", "in 6 s   host 1 is declared dead",
		"then its 1 replica (shard 1) will be re-created",
		"shard 3: fewer than a quorum of replicas left anywhere",
		"shard 2: fewer than a quorum of live replicas",
		"shard 4: nowhere else to go",
		"shard 1 has its own dead_timeout (20s): its replica is repaired in 20 s",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("forecast lacks %q:\n%s", want, text)
		}
	}
	// Silent for 10 s already: dead now.
	w.hosts[0].LastHeartbeatUnixMs = now.Add(-10 * time.Second).UnixMilli()
	if text := strings.Join(w.lossLines(1, "a", "host 1"), "\n"); !strings.Contains(text, "already dead (silent for 10s") {
		t.Errorf("dead host's forecast:\n%s", text)
	}
	// A host without replicas.
	if text := strings.Join(w.lossLines(6, "f", "host 6"), "\n"); !strings.Contains(text, "holds no replicas") {
		t.Errorf("empty host's forecast:\n%s", text)
	}
}

func TestShardList(t *testing.T) {
	for _, c := range []struct {
		ids  []uint64
		want string
	}{
		{[]uint64{7}, "shard 7"},
		{[]uint64{1, 2}, "shards 1 and 2"},
		{[]uint64{1, 2, 3}, "shards 1, 2 and 3"},
		{[]uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, "shards 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more"},
	} {
		if got := shardList(c.ids); got != c.want {
			t.Errorf("shardList(%v) = %q, want %q", c.ids, got, c.want)
		}
	}
}

func TestSecs(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "now", -time.Second: "now", 5500 * time.Millisecond: "in 6 s", 6 * time.Second: "in 6 s", 100 * time.Millisecond: "in 1 s",
	} {
		if got := secs(d); got != want {
			t.Errorf("secs(%s) = %q, want %q", d, got, want)
		}
	}
}

// After a wipe two identities share a raft address: the current one is
// the one not replaced, then the one that reported last.
func TestCurrentIdentity(t *testing.T) {
	old := &drummerpb.HostStatus{Id: "old", RaftAddress: "x", AdminState: "replaced", LastHeartbeatUnixMs: 200}
	nu := &drummerpb.HostStatus{Id: "new", RaftAddress: "x", AdminState: "active", LastHeartbeatUnixMs: 100}
	other := &drummerpb.HostStatus{Id: "other", RaftAddress: "y", LastHeartbeatUnixMs: 300}
	if c := current([]*drummerpb.HostStatus{old, nu, other}, "x"); c != nu {
		t.Fatalf("current = %v", c)
	}
	stale := &drummerpb.HostStatus{Id: "stale", RaftAddress: "x", AdminState: "active", LastHeartbeatUnixMs: 50}
	if c := current([]*drummerpb.HostStatus{stale, nu}, "x"); c != nu {
		t.Fatalf("current = %v", c)
	}
	if c := current([]*drummerpb.HostStatus{other}, "x"); c != nil {
		t.Fatalf("current of an unknown address = %v", c)
	}
	if registered(&drummerpb.HostStatus{State: "up", AdminState: "unregistered"}) {
		t.Error("an unregistered host counts as registered")
	}
}

func TestDetectCommands(t *testing.T) {
	c := DetectCommands("/tmp/go-build123/b001/exe/drummer")
	if !c.GoRun || c.Drummer != "go run ./cmd/drummer" || c.Drummercmd != "go run ./cmd/drummercmd" {
		t.Errorf("go run binary: %+v", c)
	}
	c = DetectCommands("/opt/x/drummer")
	if c.GoRun || c.Drummer != "/opt/x/drummer" {
		t.Errorf("installed binary: %+v", c)
	}
}
