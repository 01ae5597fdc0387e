package dataplane

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/drummerhq/drummer/agent/nodehostapi/nhtest"
	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/kv"
)

const shardID = 1

// proposer makes one proposal; worker is the goroutine's index.
type proposer func(ctx context.Context, worker int, cmd []byte) error

// run spreads b.N proposals over conc goroutines and reports throughput
// and latency percentiles.
func run(b *testing.B, conc int, setup func(worker int) proposer) {
	cmd, err := kv.EncodePut([]byte("bench-key-000000"), make([]byte, 64))
	if err != nil {
		b.Fatal(err)
	}
	props := make([]proposer, conc)
	for w := range props {
		props[w] = setup(w)
	}
	lat := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	var firstErr error
	var retries atomic.Int64
	var errOnce sync.Once
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < conc; w++ {
		n := b.N / conc
		if w < b.N%conc {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ls := make([]time.Duration, 0, n)
			for i := 0; i < n; i++ {
				// Transient failures (a leader change on a loaded
				// machine) are retried; the latency includes them.
				t0 := time.Now()
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					err := props[w](ctx, w, cmd)
					cancel()
					if err == nil {
						break
					}
					retries.Add(1)
					if time.Since(t0) > 30*time.Second {
						errOnce.Do(func() { firstErr = err })
						return
					}
				}
				ls = append(ls, time.Since(t0))
			}
			lat[w] = ls
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds())
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "ops/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(retries.Load()), "retries")
}

func BenchmarkPropose(b *testing.B) {
	c := nhtest.New(b, nhtest.Options{RTTMillisecond: 10})
	c.StartShard(shardID, kv.NewStateMachine, nhtest.ShardOptions{})
	leader := c.Hosts[c.WaitLeader(shardID)]

	cc, err := grpc.NewClient(leader.APIAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	raw := drummerpb.NewNodehostAPIClient(cc)

	cl, err := client.New(context.Background(), client.Config{
		Locator: client.LocatorFunc(func(_ context.Context, ids []uint64) ([]*drummerpb.ShardLocation, error) {
			var out []*drummerpb.ShardLocation
			for _, id := range ids {
				out = append(out, c.Location(id))
			}
			return out, nil
		}),
		Security: client.Security{Insecure: true}, // nhtest serves plaintext
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()

	for _, conc := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("direct/c=%d", conc), func(b *testing.B) {
			run(b, conc, func(int) proposer {
				s := leader.NH.GetNoOPSession(shardID)
				return func(ctx context.Context, _ int, cmd []byte) error {
					_, err := leader.NH.SyncPropose(ctx, s, cmd)
					return err
				}
			})
		})
		b.Run(fmt.Sprintf("grpc/c=%d", conc), func(b *testing.B) {
			run(b, conc, func(int) proposer {
				return func(ctx context.Context, _ int, cmd []byte) error {
					_, err := raw.Propose(ctx, &drummerpb.ProposeRequest{ShardId: shardID, Command: cmd})
					return err
				}
			})
		})
		b.Run(fmt.Sprintf("client/c=%d", conc), func(b *testing.B) {
			run(b, conc, func(int) proposer {
				return func(ctx context.Context, _ int, cmd []byte) error {
					_, err := cl.Propose(ctx, shardID, cmd)
					return err
				}
			})
		})
		b.Run(fmt.Sprintf("client-session/c=%d", conc), func(b *testing.B) {
			sessions := make([]*client.Session, conc)
			defer func() {
				for _, s := range sessions {
					if s != nil {
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						s.Close(ctx)
						cancel()
					}
				}
			}()
			run(b, conc, func(w int) proposer {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				s, err := cl.OpenSession(ctx, shardID)
				if err != nil {
					b.Fatal(err)
				}
				sessions[w] = s
				return func(ctx context.Context, _ int, cmd []byte) error {
					_, err := s.Propose(ctx, cmd)
					return err
				}
			})
		})
	}
}
