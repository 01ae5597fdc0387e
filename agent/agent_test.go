package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/kv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRegistry(t *testing.T) {
	r := DefaultRegistry()
	if _, ok := r.Get(kv.AppName); !ok {
		t.Fatal("kv missing from the default registry")
	}
	for _, bad := range []App{
		{Name: "no-factory"},
		{Name: "bad name", Regular: kv.NewStateMachine},
		{Name: "", Regular: kv.NewStateMachine},
		{Name: "kv", Regular: kv.NewStateMachine}, // duplicate
	} {
		if err := r.Register(bad); err == nil {
			t.Errorf("registered %+v", bad)
		}
	}
	if err := r.Register(App{Name: "orders-v2", Regular: kv.NewStateMachine}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Names(), ","); got != "kv,orders-v2" {
		t.Fatalf("names %s", got)
	}
}

func TestStorePersistsAssignments(t *testing.T) {
	dir := t.TempDir()
	s, err := loadStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.setIdentity("host-1", 42, "127.0.0.1:7001"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.flusher(ctx, func(err error) { t.Error(err) }) }()
	for i := uint64(1); i <= 50; i++ {
		s.assign(&drummerpb.StartReplicaOrder{ShardId: i, ReplicaId: i + 100, App: "kv", Join: i%2 == 0,
			Config: &drummerpb.ShardConfig{ElectionRtt: 10, HeartbeatRtt: 1}})
	}
	s.unassign(7, 107)
	s.unassign(8, 999) // another replica: ignored
	cancel()
	<-done // the flusher writes once more on the way out

	back, err := loadStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if back.hostID != "host-1" || back.deployment != 42 || back.raftAddress != "127.0.0.1:7001" {
		t.Fatalf("identity %q %d %q", back.hostID, back.deployment, back.raftAddress)
	}
	as := back.assignments()
	if len(as) != 49 || back.assignment(7) != nil || back.assignment(8).GetReplicaId() != 108 || !back.assignment(2).GetJoin() {
		t.Fatalf("%d assignments after reload; 7=%v 8=%v", len(as), back.assignment(7), back.assignment(8))
	}
	// A corrupt file is an error that says what it is, not an empty state.
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadStore(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt state: %v", err)
	}
}

// testAgent is an agent without a NodeHost: enough for the checks that
// run before any dragonboat call.
func testAgent(t *testing.T) *Agent {
	st, err := loadStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &Agent{cfg: Config{Apps: DefaultRegistry(), RaftAddress: "127.0.0.1:7001"}, log: slog.New(slog.DiscardHandler), store: st}
}

func TestStartOrdersAreValidatedFirst(t *testing.T) {
	a := testAgent(t)
	e := newExecutor(a)
	cfg := &drummerpb.ShardConfig{ElectionRtt: 10, HeartbeatRtt: 1}
	for name, o := range map[string]*drummerpb.StartReplicaOrder{
		"zero ids":         {ShardId: 0, ReplicaId: 1, App: "kv", Config: cfg},
		"unknown app":      {ShardId: 1, ReplicaId: 1, App: "nosuch", Config: cfg},
		"no config":        {ShardId: 1, ReplicaId: 1, App: "kv"},
		"bad election rtt": {ShardId: 1, ReplicaId: 1, App: "kv", Config: &drummerpb.ShardConfig{ElectionRtt: 2, HeartbeatRtt: 1}},
	} {
		if r := e.start(o); r.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED {
			t.Errorf("%s: %v %s", name, r.Outcome, r.Error)
		}
	}
	for name, o := range map[string]*drummerpb.Order{
		"stop without ids":   {Kind: &drummerpb.Order_Stop{Stop: &drummerpb.StopReplicaOrder{}}},
		"cc without replica": {Kind: &drummerpb.Order_ConfigChange{ConfigChange: &drummerpb.ConfigChangeOrder{ShardId: 1}}},
		"cc bad target": {Kind: &drummerpb.Order_ConfigChange{ConfigChange: &drummerpb.ConfigChangeOrder{ShardId: 1, ReplicaId: 2,
			Type: drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_ADD_NON_VOTING, Target: "nohost"}}},
		"transfer to 0": {Kind: &drummerpb.Order_TransferLeader{TransferLeader: &drummerpb.TransferLeaderOrder{ShardId: 1}}},
		"empty":         {},
	} {
		if r := e.execute(context.Background(), o); r.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED {
			t.Errorf("%s: %v %s", name, r.Outcome, r.Error)
		}
	}
}

func TestOrdersFromAnOlderEpochAreRefused(t *testing.T) {
	a := testAgent(t)
	e := newExecutor(a)
	order := func(id string, epoch uint64) *drummerpb.Order {
		return &drummerpb.Order{Id: id, Epoch: epoch, Kind: &drummerpb.Order_TransferLeader{TransferLeader: &drummerpb.TransferLeaderOrder{ShardId: 1, ToReplicaId: 2}}}
	}
	e.submit(5, []*drummerpb.Order{order("5/a", 5)})
	if len(e.queue) != 1 || e.epochSeen() != 5 {
		t.Fatalf("queued %d, epoch %d", len(e.queue), e.epochSeen())
	}
	// A deposed leader's orders are ignored entirely.
	e.submit(4, []*drummerpb.Order{order("4/b", 4)})
	if len(e.queue) != 1 {
		t.Fatal("order from an older epoch queued")
	}
	// The same order again while queued: deduplicated.
	e.submit(5, []*drummerpb.Order{order("5/a", 5)})
	if len(e.queue) != 1 {
		t.Fatal("duplicate order queued")
	}
	// An order whose own epoch disagrees with its reply's is refused.
	e.submit(6, []*drummerpb.Order{order("5/c", 5)})
	res, _ := e.resultsSince(0)
	if len(res) != 1 || res[0].Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED {
		t.Fatalf("results %v", res)
	}
	if !e.working() {
		t.Error("not working right after queueing orders")
	}
	e.active.Store(time.Now().Add(-time.Minute).UnixNano())
	if e.working() {
		t.Error("still working a minute later")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{RaftAddress: "127.0.0.1:7001", APIAddress: "127.0.0.1:7002", DataDir: "/tmp/x", DrummerEndpoints: []string{"127.0.0.1:7101,127.0.0.1:7102"}, Insecure: true}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"same addresses": func(c *Config) { c.APIAddress = c.RaftAddress },
		"no endpoints":   func(c *Config) { c.DrummerEndpoints = nil },
		"bad endpoint":   func(c *Config) { c.DrummerEndpoints = []string{"nohost"} },
		"bad label":      func(c *Config) { c.Labels = map[string]string{"re gion": "r1"} },
		"no data dir":    func(c *Config) { c.DataDir = "" },
		"no security":    func(c *Config) { c.Insecure = false },
		"tls + insecure": func(c *Config) { c.CAFile, c.CertFile, c.KeyFile = "a", "b", "c" },
	} {
		c := ok
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
