package fleet

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// JoinResult is one join scenario: empty hosts start, balancing moves
// replicas onto them.
type JoinResult struct {
	Hosts     int     `json:"hosts"`
	UpSeconds float64 `json:"up_seconds"`
	// BalancedSeconds is from the start of the hosts until every active
	// host holds its fair share within the tolerance (0: not reached).
	BalancedSeconds float64 `json:"balanced_seconds"`
	Share           float64 `json:"share"`
	Tolerance       float64 `json:"tolerance"`
	// Moved is the replicas the new hosts hold at the end; MinMoves the
	// fewest moves that bring every host within the tolerance.
	Moved          int          `json:"moved"`
	MinMoves       int          `json:"min_moves"`
	MovesPerSecond float64      `json:"moves_per_second"`
	Curve          []JoinSample `json:"curve,omitempty"`
}

// JoinSample is the state of the balance at one time of the join.
type JoinSample struct {
	Seconds  float64 `json:"seconds"`
	OnNew    int     `json:"replicas_on_new_hosts"`
	Least    int     `json:"least"`
	Most     int     `json:"most"`
	Unhealth uint64  `json:"shards_not_healthy"`
}

// balanceTolerance is the tolerance the drummers balance with, from the
// run's settings (the defaults otherwise).
func (c *Config) balanceTolerance(share float64) float64 {
	cfg := &dbpb.Config{}
	if v, ok := c.Settings["balance_threshold"]; ok {
		if n, err := strconv.ParseUint(strings.TrimSuffix(v, "%"), 10, 32); err == nil {
			cfg.BalanceThresholdPct = uint32(n)
		}
	}
	if v, ok := c.Settings["balance_min_excess"]; ok {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			cfg.BalanceMinExcess = uint32(n)
		}
	}
	return db.BalanceOf(cfg).Tolerance(share)
}

// loads returns the replica count of every active host that is up.
func (r *runner) loads(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	token := ""
	for range 1000 {
		resp, err := r.d.ListHosts(ctx, &drummerpb.ListHostsRequest{PageSize: 5000, PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, h := range resp.Hosts {
			if h.State == "up" && h.AdminState == "active" {
				out[h.Id] = int(h.Replicas)
			}
		}
		if token = resp.NextPageToken; token == "" {
			return out, nil
		}
	}
	return nil, fmt.Errorf("ListHosts: too many pages")
}

func (r *runner) join(ctx context.Context) error {
	f := r.fleet
	jr := &JoinResult{Hosts: r.cfg.Join}
	before, err := r.loads(ctx)
	if err != nil {
		return fmt.Errorf("host loads before the join: %w", err)
	}
	end := r.phase(ScenarioJoin)
	begin := time.Now()
	isNew := map[string]bool{}
	for i := r.cfg.Hosts; i < len(f.hosts); i++ {
		isNew[f.hosts[i].ID()] = true
		if err := f.startHost(ctx, i); err != nil {
			return err
		}
	}
	r.cfg.Logf("started %d empty hosts", r.cfg.Join)
	up := uint64(r.cfg.Hosts - len(r.killed) + r.cfg.Join)
	if err := r.waitSnap(ctx, "the new hosts up", func(s *snapshot) bool { return s.info.GetHostsByState()["up"] >= up }); err != nil {
		return err
	}
	jr.UpSeconds = time.Since(begin).Seconds()
	total := 0
	for _, n := range before {
		total += n
	}
	jr.Share = float64(total) / float64(len(before)+r.cfg.Join)
	jr.Tolerance = r.cfg.balanceTolerance(jr.Share)
	need, shed := 0, 0
	for range r.cfg.Join {
		need += int(math.Ceil(jr.Share - jr.Tolerance))
	}
	for _, n := range before {
		shed += max(0, int(math.Ceil(float64(n)-jr.Share-jr.Tolerance)))
	}
	jr.MinMoves = max(need, shed)
	r.cfg.Logf("fair share %.1f ± %.1f replicas; at least %d moves", jr.Share, jr.Tolerance, jr.MinMoves)
	deadline := time.Now().Add(r.cfg.PhaseTimeout)
	lastLog := time.Time{}
	for {
		loads, err := r.loads(ctx)
		if err != nil {
			return err
		}
		onNew, least, most := 0, math.MaxInt, 0
		for id, n := range loads {
			if isNew[id] {
				onNew += n
			}
			least, most = min(least, n), max(most, n)
		}
		s, _ := r.watch.latest()
		sample := JoinSample{Seconds: time.Since(begin).Seconds(), OnNew: onNew, Least: least, Most: most}
		if s != nil {
			sample.Unhealth = s.info.GetShards() - s.info.GetHealth()["healthy"]
		}
		if len(jr.Curve) == 0 || sample.Seconds-jr.Curve[len(jr.Curve)-1].Seconds >= 10 {
			jr.Curve = append(jr.Curve, sample)
		}
		jr.Moved = onNew
		if float64(most)-jr.Share <= jr.Tolerance && jr.Share-float64(least) <= jr.Tolerance {
			jr.BalancedSeconds = time.Since(begin).Seconds()
			jr.Curve = append(jr.Curve, sample)
			break
		}
		if time.Since(lastLog) >= 10*time.Second {
			r.cfg.Logf("  balancing: %d replicas on the new hosts, hosts hold %d to %d; %s", onNew, least, most, f.stats.Load().summary())
			lastLog = time.Now()
		}
		if time.Now().After(deadline) {
			r.res.Joins = append(r.res.Joins, jr)
			r.explainImbalance(ctx, jr)
			return fmt.Errorf("not balanced within %s: hosts hold %d to %d replicas (fair share %.1f ± %.1f)", r.cfg.PhaseTimeout, least, most, jr.Share, jr.Tolerance)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.cfg.PollEvery):
		}
	}
	if jr.BalancedSeconds > 0 {
		jr.MovesPerSecond = float64(jr.Moved) / jr.BalancedSeconds
	}
	r.res.Joins = append(r.res.Joins, jr)
	end()
	return nil
}

// explainImbalance logs what the drummers say holds balancing back: the
// deployment's explanation, each host out of balance with its own, and
// the repairs in flight or recently failed. A join that times out is
// diagnosed from this log alone.
func (r *runner) explainImbalance(ctx context.Context, jr *JoinResult) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	bs, err := r.d.GetBalanceStatus(ctx, &drummerpb.GetBalanceStatusRequest{PageSize: 5000})
	if err != nil {
		r.cfg.Logf("balance status: %v", err)
	} else {
		r.cfg.Logf("balance status: %d moves in flight, %d leader transfers recently; %q",
			bs.MovesInFlight, bs.LeaderTransfersRecent, bs.Explanation)
		shown := 0
		for _, h := range bs.Hosts {
			if math.Abs(float64(h.Replicas)-jr.Share) <= jr.Tolerance && h.MovesIn+h.MovesOut == 0 {
				continue
			}
			if shown++; shown > 40 {
				break
			}
			r.cfg.Logf("  host %s (%s): %d replicas (target %.1f), moves in %d out %d: %q",
				h.HostId, h.RaftAddress, h.Replicas, h.ReplicaTarget, h.MovesIn, h.MovesOut, h.Explanation)
		}
	}
	hosts, err := r.d.ListHosts(ctx, &drummerpb.ListHostsRequest{PageSize: 5000})
	if err != nil {
		r.cfg.Logf("hosts: %v", err)
	} else {
		for _, h := range hosts.Hosts {
			if h.State != "up" || h.AdminState != "active" {
				r.cfg.Logf("  host %s: %s, %s, %d replicas", h.Id, h.State, h.AdminState, h.Replicas)
			}
		}
	}
	reps, err := r.d.ListRepairs(ctx, &drummerpb.ListRepairsRequest{})
	if err != nil {
		r.cfg.Logf("repairs: %v", err)
		return
	}
	for i, rp := range reps.InFlight {
		if i == 20 {
			r.cfg.Logf("  ... %d repairs in flight in all", len(reps.InFlight))
			break
		}
		r.cfg.Logf("  in flight: shard %d %s %s -> %s, step %s (%d of %d), started %s ago",
			rp.ShardId, rp.Kind, rp.OldHostId, rp.NewHostId, rp.Step, rp.StepIndex, rp.StepCount,
			time.Since(time.UnixMilli(rp.StartedUnixMs)).Round(time.Second))
	}
	failed := 0
	for _, rp := range reps.Recent {
		if rp.Outcome == "done" || failed >= 20 {
			continue
		}
		failed++
		r.cfg.Logf("  recent: shard %d %s %s -> %s: %s %q", rp.ShardId, rp.Kind, rp.OldHostId, rp.NewHostId, rp.Outcome, rp.Reason)
	}
}
