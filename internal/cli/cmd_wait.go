package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// healthSummary counts shards by health (healthy ones excluded):
// "3 under_replicated, 5 pending".
func healthSummary(shards []*drummerpb.ShardStatus) string {
	counts := map[string]uint64{}
	for _, s := range shards {
		if h := s.GetHealth(); h != "healthy" {
			if h == "" {
				h = "unknown"
			}
			counts[h]++
		}
	}
	return formatHealthCounts(counts)
}

// unhealthyHint names the first few shards that are not healthy with the
// first line of their explanation.
func unhealthyHint(shards []*drummerpb.ShardStatus) string {
	const show = 5
	var parts []string
	n := 0
	for _, s := range shards {
		if s.GetHealth() == "healthy" {
			continue
		}
		n++
		if len(parts) == show {
			continue
		}
		p := fmt.Sprintf("shard %d is %s", s.GetShardId(), s.GetHealth())
		if len(s.GetExplanation()) > 0 {
			p += ": " + s.GetExplanation()[0]
		}
		parts = append(parts, p)
	}
	if n > show {
		parts = append(parts, fmt.Sprintf("and %d more; see 'drummercmd shard list'", n-show))
	}
	return strings.Join(parts, "\n")
}

type waitResultJSON struct {
	Healthy   bool              `json:"healthy"`
	Total     int               `json:"total"`
	Health    map[string]uint64 `json:"health"`
	ElapsedMs int64             `json:"elapsed_ms"`
}

func newWaitCmd(a *app) *cobra.Command {
	var (
		healthy    bool
		timeout    time.Duration
		interval   time.Duration
		shardsSpec string
		allowEmpty bool
	)
	c := &cobra.Command{
		Use:   "wait --healthy [--timeout 60s] [--shards SHARDS]",
		Short: "Wait until shards are healthy",
		Long: `Wait until every shard (or every shard given with --shards) is healthy.
At least one shard must exist unless --allow-empty is given. Progress,
e.g. "12/20 shards healthy (3 under_replicated, 5 pending)", is rewritten in
place on a terminal and printed once per change otherwise.

Exit 0 when the shards are healthy, 3 when --timeout expires (the shards
that are not healthy are named), 4 if a shard given does not exist.`,
		Example: "  drummercmd wait --healthy --timeout 5m\n  drummercmd wait --healthy --shards 1-10",
		Args:    args(cobra.NoArgs, "flags only (e.g. --healthy)"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			if !healthy {
				return usageErrorf("say what to wait for: --healthy")
			}
			if timeout <= 0 {
				return usageErrorf("--timeout must be positive, e.g. --timeout=60s")
			}
			if interval <= 0 {
				return usageErrorf("--interval must be positive, e.g. --interval=1s")
			}
			var ids []uint64
			if cmd.Flags().Changed("shards") {
				var err error
				if ids, err = parseShardIDs([]string{shardsSpec}); err != nil {
					return usageErrorf("--shards: %v", err)
				}
			}
			d, err := a.drummer()
			if err != nil {
				return err
			}
			start := time.Now()
			var (
				last   []*drummerpb.ShardStatus
				counts map[string]uint64
				total  uint64
			)
			p := a.newProgress()
			err = a.poll(cmd, p, interval, timeout, func(ctx context.Context) (bool, string, error) {
				if len(ids) == 0 {
					// Every shard: the summary counts, whatever the
					// deployment's size.
					info, err := d.GetClusterInfo(ctx, &drummerpb.GetClusterInfoRequest{})
					if err != nil {
						return false, "", a.rpcError(err, "get cluster info")
					}
					counts, total = info.GetHealth(), info.GetShards()
					ok, line := waitCountsLine(counts, total, allowEmpty)
					return ok, line, nil
				}
				resp, err := d.ListShards(ctx, &drummerpb.ListShardsRequest{ShardIds: ids})
				if err != nil {
					return false, "", a.rpcError(err, "list shards")
				}
				last = resp.GetShards()
				if missing := missingShards(ids, last); len(missing) > 0 {
					return false, "", codedErrorf(ExitNotFound, "%s %s not exist; see 'drummercmd shard list'",
						noun(len(missing), "shard", "shards")+" "+formatShardIDs(missing), noun(len(missing), "does", "do"))
				}
				counts, total = healthCounts(last), uint64(len(last))
				ok, line := waitCountsLine(counts, total, allowEmpty)
				return ok, line, nil
			})
			var te *errPollTimeout
			if errors.As(err, &te) {
				if len(ids) == 0 {
					// Name a few of the shards that hold it up.
					ctx, cancel := a.ctx(cmd)
					if resp, lerr := d.ListShards(ctx, &drummerpb.ListShardsRequest{Health: []string{"unhealthy"}, PageSize: 5}); lerr == nil {
						last = resp.GetShards()
					}
					cancel()
				}
				err = &cliError{code: ExitUnavailable, err: fmt.Errorf("shards not healthy: %w", err), hint: unhealthyHint(last)}
			}
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(waitResultJSON{
					Healthy:   true,
					Total:     int(total),
					Health:    counts,
					ElapsedMs: time.Since(start).Milliseconds(),
				})
			}
			return nil
		}),
	}
	f := c.Flags()
	f.BoolVar(&healthy, "healthy", false, "wait until the shards are healthy")
	f.DurationVar(&timeout, "timeout", 60*time.Second, "give up after this long (exit 3)")
	f.DurationVar(&interval, "interval", time.Second, "how often to poll")
	f.StringVar(&shardsSpec, "shards", "", "only these shards, e.g. 1-10,12")
	f.BoolVar(&allowEmpty, "allow-empty", false, "succeed when no shard is defined")
	return c
}

// missingShards returns the IDs asked for that the server did not return.
func missingShards(want []uint64, got []*drummerpb.ShardStatus) []uint64 {
	if len(want) == 0 {
		return nil
	}
	have := map[uint64]bool{}
	for _, s := range got {
		have[s.GetShardId()] = true
	}
	var out []uint64
	for _, id := range want {
		if !have[id] {
			out = append(out, id)
		}
	}
	return out
}

// healthCounts counts shards by health.
func healthCounts(shards []*drummerpb.ShardStatus) map[string]uint64 {
	counts := map[string]uint64{}
	for _, s := range shards {
		counts[s.GetHealth()]++
	}
	return counts
}

// waitCountsLine evaluates one poll of "wait --healthy" from counts by
// health: whether every shard is healthy, and the progress line.
func waitCountsLine(counts map[string]uint64, total uint64, allowEmpty bool) (bool, string) {
	if total == 0 {
		if allowEmpty {
			return true, "no shards defined"
		}
		return false, "no shards defined yet (use --allow-empty to accept none)"
	}
	healthy := counts["healthy"]
	line := fmt.Sprintf("%d/%d shards healthy", healthy, total)
	others := map[string]uint64{}
	for h, n := range counts {
		if h != "healthy" && n > 0 {
			if h == "" {
				h = "unknown"
			}
			others[h] += n
		}
	}
	if sum := formatHealthCounts(others); sum != "" {
		line += " (" + sum + ")"
	}
	return healthy == total, line
}
