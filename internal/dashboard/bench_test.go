package dashboard_test

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/dashboard"
	"github.com/drummerhq/drummer/internal/devcluster"
	"github.com/drummerhq/drummer/internal/logging"
)

// BenchmarkShardsPage measures the dashboard's pages against an
// in-process deployment (3 drummer servers, 3 nodehosts) whose DB holds
// 100,000 shards (defined, not launched: placing 300,000 replicas does
// not fit one machine). Run it with
//
//	go test -run '^$' -bench ShardsPage -benchtime 20x ./internal/dashboard
//
// DRUMMER_BENCH_TICK=5s slows the servers' planning tick, to measure the
// pages without the scheduler loop's own O(shards) work per tick.
//
// (sub-benchmarks: shards, unhealthy, page50000, overview, api)
func BenchmarkShardsPage(b *testing.B) {
	const nShards = 100_000
	log, _ := logging.New(os.Stderr, "text", "warn")
	var tick time.Duration
	if v := os.Getenv("DRUMMER_BENCH_TICK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("DRUMMER_BENCH_TICK: %v", err)
		}
		tick = d
	}
	var c *devcluster.Cluster
	var err error
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		c, err = devcluster.Start(ctx, devcluster.Options{Nodehosts: 3, BasePort: 20000 + rand.IntN(400)*100, DataDir: b.TempDir(),
			Logger: log, Insecure: true, HTTP: true, TickInterval: tick, Dashboard: dashboard.Handler(dashboard.Options{})})
		cancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := client.NewConn(c.Drummers, client.Options{Security: client.Security{Insecure: true}})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Drummer().CreateShards(ctx, &drummerpb.CreateShardsRequest{FirstShardId: 1, Count: nShards, Replicas: 3, App: "kv", AllowPending: true}); err != nil {
		b.Fatal(err)
	}
	base := ""
	for i, s := range c.Servers {
		if s == leader {
			base = c.URLs()[i]
		}
	}
	get := func(b *testing.B, path string) string {
		resp, err := http.Get(base + path)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %s", path, resp.Status)
		}
		return string(body)
	}
	// The pages must see every shard (pending: defined, not launched).
	time.Sleep(2 * time.Second)
	for path, want := range map[string]string{
		"/shards":                  `id="shards-total">100000<`,
		"/shards?health=unhealthy": `id="shards-total">100000<`,
		"/":                        `id="shards-total">100000<`,
	} {
		if body := get(b, path); !strings.Contains(body, want) {
			b.Fatalf("%s lacks %q:\n%s", path, want, body)
		}
	}
	for _, c := range []struct{ name, path string }{
		{"shards", "/shards"},
		{"unhealthy", "/shards?health=unhealthy"},
		{"page50000", "/shards?page_token=50000"},
		{"overview", "/"},
		{"api", "/api/v1/shards?page_size=100"},
	} {
		path := c.path
		b.Run(c.name, func(b *testing.B) {
			get(b, path) // warm
			for b.Loop() {
				get(b, path)
			}
		})
	}
}
