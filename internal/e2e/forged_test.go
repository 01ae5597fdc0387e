package e2e

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/auth"
)

// memberIDs lists each shard's member replica IDs.
func memberIDs(ss []shard) map[uint64][]uint64 {
	out := map[uint64][]uint64{}
	for _, s := range ss {
		for _, m := range s.Members {
			out[s.ShardID] = append(out[s.ShardID], m.ReplicaID)
		}
		slices.Sort(out[s.ShardID])
	}
	return out
}

// TestForgedMembershipReport is the regression test for the attack of
// issue 10: a nodehost with a valid certificate reports, for its own
// identity, memberships with a high ConfigChangeID that list the healthy
// voters of healthy shards as removed (and more made-up content). Before
// the planner checked membership claims, one such report was stored as the
// shards' newest membership, REMOVE repairs finished at once and the real
// hosts deleted their replicas' data. Now nothing happens: no member is
// dropped, every replica keeps its data and its place, the shards stay
// healthy and serve their data, and the explanation says the claims are
// ignored.
func TestForgedMembershipReport(t *testing.T) {
	c := cluster(t, 3, nil)
	hs := waitHosts(t, c, 3, 2*time.Minute)
	cli(t, c, "shard", "create", "--shard-id", "1", "--count", "2", "--replicas", "3", "--app", "kv")
	cli(t, c, "launch")
	cli(t, c, "wait", "--healthy", "--timeout", "120s")

	ctx := ctxFor(t, 5*time.Minute)
	app, err := client.New(ctx, client.Config{Endpoints: []string{c.Endpoints}, Security: c.Security("app")})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	for _, sid := range []uint64{1, 2} {
		if err := app.KV(sid).Put(ctx, []byte("k"), []byte(fmt.Sprint("v", sid))); err != nil {
			t.Fatalf("kv put shard %d: %v", sid, err)
		}
	}
	before := shards(t, c)
	want := memberIDs(before)

	// The attacker: nodehost-1's own certificate, speaking for its own
	// identity (the only one the server lets it speak for).
	me := c.Nodehosts[0]
	myID := hostOf(t, c, me)
	var labels map[string]string
	for _, h := range hs {
		if h.ID == myID {
			labels = h.Labels
		}
	}
	src, err := auth.NewSource(auth.SourceOptions{Files: c.Files("nodehost-1")})
	if err != nil {
		t.Fatal(err)
	}
	var servers []drummerpb.DrummerClient
	for _, d := range c.Drummers {
		cc, err := grpc.NewClient(d.GRPCAddr, grpc.WithTransportCredentials(src.ClientCredentials(auth.RoleServer)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		servers = append(servers, drummerpb.NewDrummerClient(cc))
	}
	addrOf := map[string]string{}
	for _, h := range hs {
		addrOf[h.ID] = h.RaftAddress
	}
	rng := rand.New(rand.NewPCG(1, 2))
	session := rng.Uint64() | 1
	forged := func(seq uint64) *drummerpb.ReportRequest {
		r := &drummerpb.ReportRequest{HostId: myID, RaftAddress: me.RaftAddr, ApiAddress: me.GRPCAddr, Labels: labels,
			Apps: []string{"kv"}, Session: session, Seq: seq, Full: seq%5 == 1, HasDiskInventory: true}
		for _, s := range before {
			var mine uint64
			var others []uint64
			for _, m := range s.Members {
				if m.HostID == myID {
					mine = m.ReplicaID
				} else {
					others = append(others, m.ReplicaID)
				}
			}
			cci := uint64(1<<40) + seq
			ms := &drummerpb.Membership{ConfigChangeId: cci, Voters: map[uint64]string{mine: me.RaftAddr}, Removed: others}
			if seq%2 == 0 {
				// Another variant: a phantom voter keeps the count.
				ms = &drummerpb.Membership{ConfigChangeId: cci, Voters: map[uint64]string{mine: me.RaftAddr, 1000 + seq: "127.0.0.1:1"},
					NonVoting: map[uint64]string{others[0]: addrOf[myID]}, Removed: others[1:]}
			}
			r.Replicas = append(r.Replicas, &drummerpb.ReplicaReport{ShardId: s.ShardID, ReplicaId: mine, LeaderId: mine,
				Term: 1 << 30, ConfigChangeId: cci, Role: drummerpb.ReplicaRole_REPLICA_ROLE_VOTER, Voters: []uint64{mine},
				Membership: ms, App: "kv"})
			r.Results = append(r.Results, &drummerpb.OrderResult{Id: fmt.Sprintf("forged/%d/%d", s.ShardID, seq),
				Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_DONE, ShardId: s.ShardID, ReplicaId: others[0], Membership: ms})
		}
		// A claim for a shard that does not exist, with made-up replicas.
		r.Replicas = append(r.Replicas, &drummerpb.ReplicaReport{ShardId: 77, ReplicaId: 5, LeaderId: 5, Term: 9, ConfigChangeId: 1 << 50,
			Membership: &drummerpb.Membership{ConfigChangeId: 1 << 50, Voters: map[uint64]string{5: me.RaftAddr}, Removed: []uint64{1, 2, 3}}})
		return r
	}

	// Attack for 20 s, several reports a second to every server, while
	// the real agent keeps reporting too.
	accepted := 0
	ignored := false
	end := time.Now().Add(20 * time.Second)
	lastCheck := time.Now()
	for seq := uint64(1); time.Now().Before(end); seq++ {
		for _, d := range servers {
			if _, err := d.Report(ctx, forged(seq)); err == nil {
				accepted++
			}
		}
		if time.Since(lastCheck) > 2*time.Second {
			lastCheck = time.Now()
			now := shards(t, c)
			if got := memberIDs(now); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("members changed under forged reports: %v, were %v", got, want)
			}
			for _, s := range now {
				if strings.Contains(strings.Join(s.Explanation, "\n"), "ignoring the membership claimed") {
					ignored = true
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if accepted == 0 {
		t.Fatal("no forged report was accepted: the test proves nothing")
	}
	if !ignored {
		t.Error("no shard's explanation said a membership claim was ignored")
	}
	t.Logf("%d forged reports accepted", accepted)

	// The real agent's next full report replaces the forgery; the shards
	// are healthy with the same members, which kept their data.
	cli(t, c, "wait", "--healthy", "--timeout", "60s")
	after := shards(t, c)
	if got := memberIDs(after); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("members after the attack: %v, were %v", got, want)
	}
	for _, s := range after {
		for _, m := range s.Members {
			if m.State != "live" {
				t.Errorf("shard %d replica %d on %s is %s", s.ShardID, m.ReplicaID, m.HostID, m.State)
			}
		}
	}
	for _, sid := range []uint64{1, 2} {
		v, ok, err := app.KV(sid).Get(ctx, []byte("k"))
		if err != nil || !ok || string(v) != fmt.Sprint("v", sid) {
			t.Fatalf("kv get shard %d after the attack: %q %v %v", sid, v, ok, err)
		}
	}
}
