// Package e2e holds end-to-end tests on real processes: drummer servers,
// nodehosts and drummercmd built from this module, talking gRPC and Raft
// over 127.0.0.1.
package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/testcluster"
)

var bins testcluster.Binaries

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "drummer-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	bins, err = testcluster.Build(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cluster starts a cluster for t and stops it (keeping logs in t's temp dir,
// printing their tails when t fails).
func cluster(t *testing.T, nodehosts int, mod func(*testcluster.Options)) *testcluster.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	// One multi-process test at a time across packages (go test runs
	// packages in parallel on this machine's few cores).
	testcluster.Exclusive(t)
	opts := testcluster.Options{Bins: bins, Dir: t.TempDir(), Nodehosts: nodehosts}
	if mod != nil {
		mod(&opts)
	}
	c, err := testcluster.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("process logs:\n%s", c.Logs(6000))
		}
	})
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// cli runs drummercmd and fails the test unless it exits 0.
func cli(t *testing.T, c *testcluster.Cluster, args ...string) string {
	t.Helper()
	r := c.CLI(ctxFor(t, 2*time.Minute), args...)
	if r.Code != 0 {
		t.Fatalf("drummercmd %s: %s", strings.Join(args, " "), r)
	}
	return r.Stdout
}

type member struct {
	ReplicaID   uint64 `json:"replica_id"`
	HostID      string `json:"host_id"`
	RaftAddress string `json:"raft_address"`
	APIAddress  string `json:"api_address"`
	Role        string `json:"role"`
	State       string `json:"state"`
}

type shard struct {
	ShardID         uint64   `json:"shard_id"`
	App             string   `json:"app"`
	ReplicasDesired int      `json:"replicas_desired"`
	Health          string   `json:"health"`
	LeaderReplicaID uint64   `json:"leader_replica_id"`
	Members         []member `json:"members"`
	Explanation     []string `json:"explanation"`
}

type host struct {
	ID          string            `json:"id"`
	RaftAddress string            `json:"raft_address"`
	APIAddress  string            `json:"api_address"`
	Labels      map[string]string `json:"labels"`
	State       string            `json:"state"`
	AdminState  string            `json:"admin_state"`
	Replicas    int               `json:"replicas"`
}

func shards(t *testing.T, c *testcluster.Cluster) []shard {
	t.Helper()
	var out []shard
	if err := json.Unmarshal([]byte(cli(t, c, "shard", "list", "-o", "json")), &out); err != nil {
		t.Fatalf("shard list -o json: %v", err)
	}
	return out
}

func hosts(t *testing.T, c *testcluster.Cluster) []host {
	t.Helper()
	var out []host
	if err := json.Unmarshal([]byte(cli(t, c, "host", "list", "-o", "json")), &out); err != nil {
		t.Fatalf("host list -o json: %v", err)
	}
	return out
}

// waitHosts waits until n hosts are registered and up.
func waitHosts(t *testing.T, c *testcluster.Cluster, n int, d time.Duration) []host {
	t.Helper()
	deadline := time.Now().Add(d)
	var last []host
	for time.Now().Before(deadline) {
		r := c.CLI(ctxFor(t, 30*time.Second), "host", "list", "-o", "json")
		if r.Code == 0 {
			last = nil
			_ = json.Unmarshal([]byte(r.Stdout), &last)
			up := 0
			for _, h := range last {
				if h.State == "up" && h.AdminState != "unregistered" {
					up++
				}
			}
			if up >= n {
				return last
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %d hosts up; last: %+v", n, last)
	return nil
}

// TestLaunchShardsOverRegions is the foundation acceptance test: 3 drummer
// and 4 nodehost processes, 20 shards of 3 replicas over three regions,
// all healthy with 3 members on distinct hosts, then a clean stop.
func TestLaunchShardsOverRegions(t *testing.T) {
	c := cluster(t, 4, nil)
	waitHosts(t, c, 4, 2*time.Minute)
	cli(t, c, "regions", "set", "r1:1,r2:1,r3:1")
	cli(t, c, "shard", "create", "--shard-id", "1", "--count", "20", "--replicas", "3", "--app", "kv")
	// Before launch the shards are only defined.
	for _, s := range shards(t, c) {
		if s.Health != "pending" || len(s.Members) != 0 {
			t.Fatalf("shard %d before launch: %s with %d members", s.ShardID, s.Health, len(s.Members))
		}
	}
	cli(t, c, "launch")
	cli(t, c, "wait", "--healthy", "--timeout", "120s")
	got := shards(t, c)
	if len(got) != 20 {
		t.Fatalf("%d shards, want 20", len(got))
	}
	regionOf := map[string]string{}
	for _, h := range hosts(t, c) {
		regionOf[h.ID] = h.Labels["region"]
	}
	for _, s := range got {
		if s.Health != "healthy" || len(s.Members) != 3 || s.LeaderReplicaID == 0 {
			t.Fatalf("shard %d: %s, %d members, leader %d: %v", s.ShardID, s.Health, len(s.Members), s.LeaderReplicaID, s.Explanation)
		}
		seenHost, seenRegion := map[string]bool{}, map[string]bool{}
		for _, m := range s.Members {
			if seenHost[m.HostID] {
				t.Fatalf("shard %d has two members on host %s", s.ShardID, m.HostID)
			}
			seenHost[m.HostID] = true
			seenRegion[regionOf[m.HostID]] = true
			if m.APIAddress == "" || m.RaftAddress == "" || m.Role != "voter" {
				t.Fatalf("shard %d member %+v", s.ShardID, m)
			}
		}
		if len(seenRegion) != 3 {
			t.Fatalf("shard %d is not spread over r1, r2, r3: %+v", s.ShardID, s.Members)
		}
	}
	// Stop everything cleanly: every process exits 0 on SIGTERM.
	for _, n := range c.Nodehosts {
		if err := n.Stop(20 * time.Second); err != nil {
			t.Errorf("%s: %v", n.Name, err)
		}
	}
	for _, n := range c.Drummers {
		if err := n.Stop(20 * time.Second); err != nil {
			t.Errorf("%s: %v", n.Name, err)
		}
	}
}

// TestMemberAddAndRemove adds a fourth drummer server with member add and
// --join, checks it serves, then removes it and checks it is gone.
func TestMemberAddAndRemove(t *testing.T) {
	c := cluster(t, 0, nil)
	cli(t, c, "wait", "--healthy", "--allow-empty", "--timeout", "60s")
	ports, err := testcluster.FreePorts("127.0.0.1", 2)
	if err != nil {
		t.Fatal(err)
	}
	raft, grpcAddr := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	cli(t, c, "member", "add", "--id", "4", "--raft-address", raft, "--grpc-address", grpcAddr)
	if err := c.MakeCert("drummer-4", auth.RoleServer, ""); err != nil {
		t.Fatal(err)
	}
	p := &testcluster.Process{Name: "drummer-4", Path: bins.Drummer, LogPath: t.TempDir() + "/drummer-4.log",
		Args: append([]string{"--id", "4", "--raft-address", raft, "--grpc-address", grpcAddr, "--data-dir", t.TempDir(), "--join"}, c.TLSArgs("drummer-4")...)}
	c.Track(p)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	// The new server answers (redirecting to the leader) as an endpoint.
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := testcluster.RunCLI(ctxFor(t, 30*time.Second), bins.Drummercmd, append(c.TLSArgs("viewer"), "--endpoints", grpcAddr, "member", "list", "-o", "json")...)
		if r.Code == 0 && strings.Contains(r.Stdout, grpcAddr) && strings.Count(r.Stdout, "replica_id") == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new member not serving: %s\n%s", r, p.Tail(4000))
		}
		time.Sleep(500 * time.Millisecond)
	}
	cli(t, c, "member", "remove", "--id", "4")
	out := cli(t, c, "member", "list", "-o", "json")
	if strings.Contains(out, grpcAddr) || strings.Count(out, "replica_id") != 3 {
		t.Fatalf("member 4 still listed: %s", out)
	}
	select {
	case <-p.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("removed server did not exit:\n%s", p.Tail(4000))
	}
}

// TestBadInput checks that bad flags and requests get a clear message and a
// documented exit code, and change nothing.
func TestBadInput(t *testing.T) {
	c := cluster(t, 3, nil)
	waitHosts(t, c, 3, 2*time.Minute)
	ctx := ctxFor(t, 2*time.Minute)
	for _, tc := range []struct {
		name string
		path string
		args []string
		code int
		want string
	}{
		{"drummer unknown flag", bins.Drummer, []string{"--no-such-flag"}, 2, "unknown flag"},
		{"drummer bad members", bins.Drummer, []string{"--id", "1", "--raft-address", "127.0.0.1:1", "--grpc-address", "127.0.0.1:2", "--data-dir", t.TempDir(), "--initial-members", "1=127.0.0.1"}, 2, "initial-members"},
		{"drummer no members", bins.Drummer, []string{"--id", "1", "--raft-address", "127.0.0.1:1", "--grpc-address", "127.0.0.1:2", "--data-dir", t.TempDir()}, 2, "--initial-members"},
		{"nodehost unknown flag", bins.Nodehost, []string{"--bogus"}, 2, "unknown flag"},
		{"nodehost bad labels", bins.Nodehost, []string{"--raft-address", "127.0.0.1:1", "--api-address", "127.0.0.1:2", "--data-dir", t.TempDir(), "--drummer-endpoints", c.Endpoints, "--labels", "region"}, 2, "label"},
		{"cli unknown flag", bins.Drummercmd, []string{"--endpoints", c.Endpoints, "shard", "list", "--bogus"}, 2, "unknown flag"},
		{"shard id 0", bins.Drummercmd, []string{"--endpoints", c.Endpoints, "shard", "create", "--shard-id", "0", "--replicas", "3", "--app", "kv"}, 2, "0"},
		{"replicas > hosts", bins.Drummercmd, []string{"--endpoints", c.Endpoints, "shard", "create", "--shard-id", "1", "--replicas", "5", "--app", "kv"}, 5, "nodehosts"},
		{"unknown app", bins.Drummercmd, []string{"--endpoints", c.Endpoints, "shard", "create", "--shard-id", "1", "--replicas", "3", "--app", "nosuchapp"}, 2, "unknown app"},
		{"regions do not add up", bins.Drummercmd, []string{"--endpoints", c.Endpoints, "shard", "create", "--shard-id", "1", "--replicas", "3", "--app", "kv", "--regions", "r1:1"}, 2, "region"},
		{"status of unknown shard", bins.Drummercmd, []string{"--endpoints", c.Endpoints, "shard", "status", "77"}, 4, "77"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.path == bins.Drummercmd {
				args = append(c.TLSArgs("admin"), args...)
			}
			r := testcluster.RunCLI(ctx, tc.path, args...)
			if r.Code != tc.code || !strings.Contains(r.Stderr, tc.want) {
				t.Fatalf("want exit %d mentioning %q; got %s", tc.code, tc.want, r)
			}
		})
	}
	if got := shards(t, c); len(got) != 0 {
		t.Fatalf("bad input created shards: %+v", got)
	}
	// A duplicate shard is a conflict, and the first definition is kept.
	cli(t, c, "shard", "create", "--shard-id", "9", "--replicas", "3", "--app", "kv")
	r := c.CLI(ctx, "shard", "create", "--shard-id", "9", "--replicas", "1", "--app", "kv")
	if r.Code != 5 || !strings.Contains(r.Stderr, "already exists") {
		t.Fatalf("duplicate shard: %s", r)
	}
	if got := shards(t, c); len(got) != 1 || got[0].ReplicasDesired != 3 {
		t.Fatalf("duplicate create changed state: %+v", got)
	}
}
