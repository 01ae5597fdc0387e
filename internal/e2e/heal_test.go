package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drummerhq/drummer/internal/testcluster"
)

type repair struct {
	ID        uint64 `json:"id"`
	ShardID   uint64 `json:"shard_id"`
	Kind      string `json:"kind"`
	OldHostID string `json:"old_host_id"`
	NewHostID string `json:"new_host_id"`
	Step      string `json:"step"`
	Outcome   string `json:"outcome"`
	Reason    string `json:"reason"`
}

type repairs struct {
	InFlight []repair `json:"in_flight"`
	Recent   []repair `json:"recent"`
}

func repairList(t *testing.T, c *testcluster.Cluster) repairs {
	t.Helper()
	var r repairs
	if err := json.Unmarshal([]byte(cli(t, c, "repair", "list", "-o", "json")), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

type info struct {
	LeaderReplicaID uint64 `json:"leader_replica_id"`
	Epoch           uint64 `json:"epoch"`
}

func clusterInfo(t *testing.T, c *testcluster.Cluster) info {
	t.Helper()
	var i info
	if err := json.Unmarshal([]byte(cli(t, c, "info", "-o", "json")), &i); err != nil {
		t.Fatal(err)
	}
	return i
}

// healCluster is a launched cluster of n nodehosts (regions r1..r3) with
// short liveness timeouts and `count` shards of 3 replicas, all healthy.
func healCluster(t *testing.T, n, count int) *testcluster.Cluster {
	t.Helper()
	c := cluster(t, n, nil)
	waitHosts(t, c, n, 2*time.Minute)
	cli(t, c, "config", "set", "suspect_timeout=2s", "dead_timeout=6s")
	cli(t, c, "shard", "create", "--shard-id", "1", "--count", fmt.Sprint(count), "--replicas", "3", "--app", "kv")
	cli(t, c, "launch")
	cli(t, c, "wait", "--healthy", "--timeout", "180s")
	return c
}

func hostOf(t *testing.T, c *testcluster.Cluster, n *testcluster.Node) string {
	t.Helper()
	for _, h := range hosts(t, c) {
		if h.RaftAddress == n.RaftAddr {
			return h.ID
		}
	}
	t.Fatalf("%s is not registered", n.Name)
	return ""
}

func replicasOn(ss []shard, hostID string) int {
	n := 0
	for _, s := range ss {
		for _, m := range s.Members {
			if m.HostID == hostID {
				n++
			}
		}
	}
	return n
}

// waitShards polls shard list until ok accepts it.
func waitShards(t *testing.T, c *testcluster.Cluster, d time.Duration, what string, ok func([]shard) (bool, string)) []shard {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		r := c.CLI(ctxFor(t, 30*time.Second), "shard", "list", "-o", "json")
		if r.Code == 0 {
			var ss []shard
			if err := json.Unmarshal([]byte(r.Stdout), &ss); err == nil {
				done, msg := ok(ss)
				if done {
					return ss
				}
				last = msg
			}
		} else {
			last = r.String()
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s; last: %s", d, what, last)
	return nil
}

func allHealthyWithout(hostID string, want int) func([]shard) (bool, string) {
	return func(ss []shard) (bool, string) {
		healthy := 0
		var bad []string
		for _, s := range ss {
			if s.Health == "healthy" {
				healthy++
			} else {
				bad = append(bad, fmt.Sprintf("%d:%s %v", s.ShardID, s.Health, s.Explanation))
			}
		}
		if healthy != want || len(ss) != want {
			return false, fmt.Sprintf("%d/%d healthy; %s", healthy, len(ss), strings.Join(bad, "; "))
		}
		if n := replicasOn(ss, hostID); hostID != "" && n > 0 {
			return false, fmt.Sprintf("%d replicas still on %s", n, hostID)
		}
		return true, ""
	}
}

// TestKilledHostIsReplaced: SIGKILL one of 5 nodehosts holding replicas of
// 30 shards; every shard is repaired on the other hosts and the dead host
// leaves every membership. Restarted, its stale replicas are deleted and it
// takes new work.
func TestKilledHostIsReplaced(t *testing.T) {
	c := healCluster(t, 5, 30)
	// This test checks that the restarted host's stale replicas are
	// cleaned up and counts what it holds: balancing would (rightly) move
	// replicas onto the emptied host meanwhile.
	cli(t, c, "config", "set", "balance_replicas=off")
	victim := c.Nodehosts[0]
	victimID := hostOf(t, c, victim)
	if n := replicasOn(shards(t, c), victimID); n == 0 {
		t.Fatalf("victim holds no replicas")
	}
	victim.Kill()
	start := time.Now()
	waitShards(t, c, 3*time.Minute, "repair of every shard", allHealthyWithout(victimID, 30))
	t.Logf("all 30 shards healthy without the killed host %s after SIGKILL", time.Since(start).Round(time.Millisecond))

	// Restart it: its replicas were removed from every membership while it
	// was away, so they are zombies now.
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	waitHosts(t, c, 5, time.Minute)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var hs []host
		_ = json.Unmarshal([]byte(cli(t, c, "host", "list", "-o", "json")), &hs)
		var h host
		for _, x := range hs {
			if x.ID == victimID {
				h = x
			}
		}
		// The zombie cleanup shows in the log of the restarted nodehost;
		// the host holds no members and its data is gone.
		if h.Replicas == 0 && strings.Count(victim.Tail(1<<20), "replica data removed") >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stale replicas not cleaned up on the restarted host: %+v\n%s", h, victim.Tail(5000))
		}
		time.Sleep(500 * time.Millisecond)
	}
	// It takes new work: new shards go to the least loaded host.
	cli(t, c, "shard", "create", "--shard-id", "100", "--count", "3", "--replicas", "3", "--app", "kv")
	ss := waitShards(t, c, 2*time.Minute, "new shards", allHealthyWithout("", 33))
	if replicasOn(ss, victimID) == 0 {
		t.Fatalf("the restarted host took no new replica")
	}
}

// TestMinorityIsNotRepaired: with 2 of a shard's 3 hosts stopped, the shard
// is reported unavailable and nothing is repaired from the lone survivor;
// when one host returns with its data the shard heals.
func TestMinorityIsNotRepaired(t *testing.T) {
	c := healCluster(t, 5, 6)
	ss := shards(t, c)
	target := ss[0]
	byHost := map[string]*testcluster.Node{}
	for _, n := range c.Nodehosts {
		byHost[n.RaftAddr] = n
	}
	a, b := byHost[target.Members[0].RaftAddress], byHost[target.Members[1].RaftAddress]
	a.Kill()
	b.Kill()
	// Well past the dead timeout, the shard is still unavailable with its
	// three members, and says whom it waits for.
	time.Sleep(15 * time.Second)
	var st shard
	if err := json.Unmarshal([]byte(cli(t, c, "shard", "status", fmt.Sprint(target.ShardID), "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Health != "unavailable" {
		t.Fatalf("shard %d is %s, want unavailable: %v", st.ShardID, st.Health, st.Explanation)
	}
	if len(st.Members) != 3 {
		t.Fatalf("shard %d members changed while it had no quorum: %+v", st.ShardID, st.Members)
	}
	if !strings.Contains(strings.Join(st.Explanation, "\n"), "waiting for") {
		t.Fatalf("no explanation of what it waits for: %v", st.Explanation)
	}
	for _, r := range repairList(t, c).InFlight {
		if r.ShardID == target.ShardID {
			t.Fatalf("repair started on a shard without quorum: %+v", r)
		}
	}
	// One host returns with its data: quorum is back, the shard heals
	// (the other dead replica is replaced).
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	waitShards(t, c, 3*time.Minute, "shard back to healthy", func(ss []shard) (bool, string) {
		for _, s := range ss {
			if s.ShardID == target.ShardID {
				return s.Health == "healthy", fmt.Sprintf("%s %v", s.Health, s.Explanation)
			}
		}
		return false, "shard missing"
	})
}

// TestLeaderKilledDuringRepair: SIGKILL the drummer leader while a repair
// is in flight; the repair completes under the new leader and no healthy
// host is declared dead.
func TestLeaderKilledDuringRepair(t *testing.T) {
	c := healCluster(t, 5, 30)
	victim := c.Nodehosts[1]
	victimID := hostOf(t, c, victim)
	live := map[string]bool{}
	for _, h := range hosts(t, c) {
		if h.ID != victimID {
			live[h.ID] = true
		}
	}
	// Watch host states through the failover: a live host must never be
	// reported dead.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	var falseDead []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			r := c.CLI(ctxFor(t, 10*time.Second), "host", "list", "-o", "json")
			var hs []host
			if r.Code == 0 && json.Unmarshal([]byte(r.Stdout), &hs) == nil {
				for _, h := range hs {
					if live[h.ID] && h.State == "dead" {
						mu.Lock()
						falseDead = append(falseDead, h.ID)
						mu.Unlock()
					}
				}
			}
			time.Sleep(300 * time.Millisecond)
		}
	}()
	victim.Kill()
	// Wait for repairs to be in flight, then kill the leader.
	deadline := time.Now().Add(time.Minute)
	for len(repairList(t, c).InFlight) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no repair started")
		}
		time.Sleep(200 * time.Millisecond)
	}
	leader := clusterInfo(t, c).LeaderReplicaID
	killed := c.Drummers[leader-1]
	killed.Kill()
	start := time.Now()
	waitShards(t, c, 3*time.Minute, "repairs finished under the new leader", allHealthyWithout(victimID, 30))
	t.Logf("all shards healthy %s after killing leader %d", time.Since(start).Round(time.Millisecond), leader)
	if got := clusterInfo(t, c).LeaderReplicaID; got == leader {
		t.Fatalf("leader did not change")
	}
	stop.Store(true)
	wg.Wait()
	if len(falseDead) > 0 {
		t.Fatalf("live hosts reported dead during failover: %v", slices.Compact(falseDead))
	}
	for _, r := range repairList(t, c).Recent {
		if r.OldHostID != "" && r.OldHostID != victimID && r.Kind == "replace" {
			t.Fatalf("a replica of a live host was replaced: %+v", r)
		}
	}
	// Bring the old leader back so Close stops it like the others.
	_ = killed.Start()
}

// TestDrain: draining a host moves every replica off it (add before
// remove) and leaves every shard healthy.
func TestDrain(t *testing.T) {
	c := healCluster(t, 4, 12)
	target := c.Nodehosts[2]
	id := hostOf(t, c, target)
	if replicasOn(shards(t, c), id) == 0 {
		t.Fatal("target holds nothing")
	}
	r := c.CLI(ctxFor(t, 3*time.Minute), "host", "drain", id, "--wait", "--timeout", "150s")
	if r.Code != 0 {
		t.Fatalf("drain: %s", r)
	}
	ss := shards(t, c)
	if n := replicasOn(ss, id); n != 0 {
		t.Fatalf("%d replicas left on the drained host", n)
	}
	for _, s := range ss {
		if s.Health != "healthy" {
			t.Fatalf("shard %d %s after drain: %v", s.ShardID, s.Health, s.Explanation)
		}
	}
	// A drain that can never finish is refused up front: with the target
	// drained, draining another host leaves 2 eligible hosts for 3 replicas.
	other := hostOf(t, c, c.Nodehosts[0])
	r = c.CLI(ctxFor(t, time.Minute), "host", "drain", other)
	if r.Code != 5 || !strings.Contains(r.Stderr, "nowhere to move") {
		t.Fatalf("impossible drain not refused: %s", r)
	}
}
