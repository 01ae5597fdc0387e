package itest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/drummerhq/drummer/agent"
	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/devcluster"
	"github.com/drummerhq/drummer/internal/logging"
)

func startCluster(t *testing.T, nodehosts int) (*devcluster.Cluster, drummerpb.DrummerClient) {
	t.Helper()
	log, _ := logging.New(os.Stderr, "text", "warn")
	if testing.Verbose() {
		log, _ = logging.New(os.Stderr, "text", "info")
	}
	var c *devcluster.Cluster
	var err error
	for range 10 {
		base := 20000 + rand.IntN(400)*100
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		c, err = devcluster.Start(ctx, devcluster.Options{Nodehosts: nodehosts, BasePort: base, DataDir: t.TempDir(), Logger: log, Insecure: true})
		cancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	conn, err := client.NewConn(c.Drummers, client.Options{Security: client.Security{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d := conn.Drummer()
	// Shards can be defined only for apps registered hosts run: wait until
	// every nodehost's reports registered it.
	waitFor(t, 60*time.Second, "nodehosts registered", func() (bool, string) {
		resp, err := d.ListHosts(context.Background(), &drummerpb.ListHostsRequest{})
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, h := range resp.Hosts {
			if h.State == "up" && h.AdminState != "unregistered" {
				n++
			}
		}
		return n >= nodehosts, fmt.Sprintf("%d of %d registered", n, nodehosts)
	})
	return c, d
}

func waitFor(t *testing.T, d time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := f()
		if ok {
			return
		}
		last = msg
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s; last: %s", d, what, last)
}

func allHealthy(ctx context.Context, d drummerpb.DrummerClient, n int) (bool, string) {
	ls, err := d.ListShards(ctx, &drummerpb.ListShardsRequest{})
	if err != nil {
		return false, err.Error()
	}
	h := 0
	msg := ""
	for _, s := range ls.Shards {
		if s.Health == "healthy" {
			h++
		} else {
			msg += fmt.Sprintf("shard %d %s %v; ", s.ShardId, s.Health, s.Explanation)
		}
	}
	return h == n && len(ls.Shards) == n, fmt.Sprintf("%d/%d healthy: %s", h, len(ls.Shards), msg)
}

func TestRepairAfterHostDeath(t *testing.T) {
	c, d := startCluster(t, 4)
	ctx := context.Background()
	// Balancing off: the returning host must end up holding nothing, and
	// balancing would (rightly) move replicas onto it.
	if _, err := d.SetConfig(ctx, &drummerpb.SetConfigRequest{Values: map[string]string{"suspect_timeout": "2s", "dead_timeout": "6s", "balance_replicas": "off"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateShards(ctx, &drummerpb.CreateShardsRequest{FirstShardId: 1, Count: 6, Replicas: 3, App: "kv"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Launch(ctx, &drummerpb.LaunchRequest{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "launch", func() (bool, string) { return allHealthy(ctx, d, 6) })

	victim := c.Agents[0]
	victimID := victim.HostID()
	victim.Close()
	start := time.Now()
	waitFor(t, 90*time.Second, "repair", func() (bool, string) {
		ok, msg := allHealthy(ctx, d, 6)
		if !ok {
			return false, msg
		}
		ls, _ := d.ListShards(ctx, &drummerpb.ListShardsRequest{})
		for _, s := range ls.Shards {
			for _, m := range s.Members {
				if m.HostId == victimID {
					return false, fmt.Sprintf("shard %d still has replica %d on the dead host", s.ShardId, m.ReplicaId)
				}
			}
		}
		return true, ""
	})
	t.Logf("repaired in %s", time.Since(start))

	// Bring the dead host back with its data: its stale replicas are
	// zombies now and must be stopped and deleted.
	back, err := agent.New(ctx, c.AgentConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	waitFor(t, 60*time.Second, "zombie cleanup", func() (bool, string) {
		info := back.NodeHost().GetNodeHostInfo(dragonboat.DefaultNodeHostInfoOption)
		if n := len(info.LogInfo); n != 0 {
			return false, fmt.Sprintf("%d replicas still on disk: %v", n, info.LogInfo)
		}
		return true, ""
	})
}

// TestMaintenanceWindow: a host in maintenance is not repaired while it is
// away; when the window ends by itself, its replicas are repaired.
func TestMaintenanceWindow(t *testing.T) {
	c, d := startCluster(t, 4)
	ctx := context.Background()
	if _, err := d.SetConfig(ctx, &drummerpb.SetConfigRequest{Values: map[string]string{"suspect_timeout": "2s", "dead_timeout": "5s"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateShards(ctx, &drummerpb.CreateShardsRequest{FirstShardId: 1, Count: 4, Replicas: 3, App: "kv"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Launch(ctx, &drummerpb.LaunchRequest{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "launch", func() (bool, string) { return allHealthy(ctx, d, 4) })
	victim := c.Agents[0]
	id := victim.HostID()
	if _, err := d.SetHostState(ctx, &drummerpb.SetHostStateRequest{HostId: id, Action: drummerpb.HostAdminAction_HOST_ADMIN_ACTION_MAINTENANCE, DurationMs: 15000}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	victim.Close()
	// Well past the dead timeout, inside the window: nothing is repaired.
	time.Sleep(9 * time.Second)
	ls, err := d.ListShards(ctx, &drummerpb.ListShardsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	away := 0
	for _, s := range ls.Shards {
		if s.Repair != nil {
			t.Fatalf("shard %d repaired during maintenance: %v", s.ShardId, s.Repair)
		}
		for _, m := range s.Members {
			if m.HostId == id {
				if m.State != "away" {
					t.Fatalf("member on the host in maintenance is %q, want away", m.State)
				}
				away++
			}
		}
	}
	if away == 0 {
		t.Fatal("the host held no replicas")
	}
	// The window ends by itself; then the replicas are repaired.
	waitFor(t, 90*time.Second, "repair after the window", func() (bool, string) {
		ok, msg := allHealthy(ctx, d, 4)
		if !ok {
			return false, msg
		}
		ls, _ := d.ListShards(ctx, &drummerpb.ListShardsRequest{})
		for _, s := range ls.Shards {
			for _, m := range s.Members {
				if m.HostId == id {
					return false, "still a member on the host"
				}
			}
		}
		return true, ""
	})
	if time.Since(start) < 15*time.Second {
		t.Fatalf("repaired %s after the host left, before its 15s window ended", time.Since(start))
	}
}

// TestDrainMovesOneReplicaShard drains the host of a one-replica shard on
// real dragonboat NodeHosts: the replica moves (the old one carries out
// its own removal, the only word the trust rules take for it), the data
// moves with it, and nothing is left on the drained host.
func TestDrainMovesOneReplicaShard(t *testing.T) {
	c, d := startCluster(t, 2)
	ctx := context.Background()
	if _, err := d.SetConfig(ctx, &drummerpb.SetConfigRequest{Values: map[string]string{"balance_replicas": "off"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateShards(ctx, &drummerpb.CreateShardsRequest{FirstShardId: 1, Count: 1, Replicas: 1, App: "kv"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Launch(ctx, &drummerpb.LaunchRequest{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "launch", func() (bool, string) { return allHealthy(ctx, d, 1) })
	cl, err := client.New(ctx, client.Config{Endpoints: c.Drummers, AttemptTimeout: time.Second, Security: client.Security{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.KV(1).Put(ctx, []byte("k"), []byte("before the move")); err != nil {
		t.Fatal(err)
	}
	sh, err := d.GetShard(ctx, &drummerpb.GetShardRequest{ShardId: 1})
	if err != nil {
		t.Fatal(err)
	}
	from := sh.Members[0].HostId
	if _, err := d.SetHostState(ctx, &drummerpb.SetHostStateRequest{HostId: from, Action: drummerpb.HostAdminAction_HOST_ADMIN_ACTION_DRAIN}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the replica moved off the drained host", func() (bool, string) {
		ok, msg := allHealthy(ctx, d, 1)
		if !ok {
			return false, msg
		}
		sh, err := d.GetShard(ctx, &drummerpb.GetShardRequest{ShardId: 1})
		if err != nil {
			return false, err.Error()
		}
		if m := sh.Members; len(m) != 1 || m[0].HostId == from {
			return false, fmt.Sprintf("members %v, explanation %v", m, sh.Explanation)
		}
		return true, ""
	})
	v, found, err := cl.KV(1).Get(ctx, []byte("k"))
	if err != nil || !found || string(v) != "before the move" {
		t.Fatalf("after the move: %q found=%v err=%v, want the value written before", v, found, err)
	}
	var drained *agent.Agent
	for _, a := range c.Agents {
		if a.HostID() == from {
			drained = a
		}
	}
	if drained == nil {
		t.Fatalf("no agent with host ID %s", from)
	}
	waitFor(t, 60*time.Second, "the drained host's data removed", func() (bool, string) {
		info := drained.NodeHost().GetNodeHostInfo(dragonboat.DefaultNodeHostInfoOption)
		return len(info.LogInfo) == 0, fmt.Sprintf("%d replicas still on disk: %v", len(info.LogInfo), info.LogInfo)
	})
}
