package db

import (
	"time"

	"github.com/drummerhq/drummer/internal/dbpb"
)

// Balancing defaults, used where the DB's config holds zero (a DB written
// before the balancing settings existed, or a setting never changed).
const (
	DefaultBalanceThresholdPct = 5
	DefaultBalanceMinExcess    = 2
	DefaultMaxBalanceMoves     = 64
	DefaultMaxLeaderTransfers  = 50
	DefaultBalanceCooldown     = time.Minute
)

// BalanceSettings are the balancing settings in force, zeros resolved.
type BalanceSettings struct {
	Replicas, Leaders  bool
	ThresholdPct       int
	MinExcess          int
	MaxMoves           int
	MaxLeaderTransfers int // per second
	Cooldown           time.Duration
}

// BalanceOf resolves the balancing settings of a config.
func BalanceOf(c *dbpb.Config) BalanceSettings {
	b := BalanceSettings{
		Replicas:           !c.GetBalanceReplicasOff(),
		Leaders:            !c.GetBalanceLeadersOff(),
		ThresholdPct:       int(c.GetBalanceThresholdPct()),
		MinExcess:          int(c.GetBalanceMinExcess()),
		MaxMoves:           int(c.GetMaxBalanceMoves()),
		MaxLeaderTransfers: int(c.GetMaxLeaderTransfers()),
		Cooldown:           time.Duration(c.GetBalanceCooldownMs()) * time.Millisecond,
	}
	if b.ThresholdPct == 0 {
		b.ThresholdPct = DefaultBalanceThresholdPct
	}
	if b.MinExcess == 0 {
		b.MinExcess = DefaultBalanceMinExcess
	}
	if b.MaxMoves == 0 {
		b.MaxMoves = DefaultMaxBalanceMoves
	}
	if b.MaxLeaderTransfers == 0 {
		b.MaxLeaderTransfers = DefaultMaxLeaderTransfers
	}
	if b.Cooldown == 0 {
		b.Cooldown = DefaultBalanceCooldown
	}
	return b
}

// Tolerance is how far a count may stray from its fair share before it is
// out of balance: max(share x ThresholdPct / 100, MinExcess), like
// CockroachDB's rebalance threshold.
func (b BalanceSettings) Tolerance(share float64) float64 {
	return max(share*float64(b.ThresholdPct)/100, float64(b.MinExcess))
}

// LeaderTolerance is Tolerance for leader counts, whose shares are a
// fraction of replica counts: the absolute floor is half of MinExcess.
func (b BalanceSettings) LeaderTolerance(share float64) float64 {
	return max(share*float64(b.ThresholdPct)/100, float64((b.MinExcess+1)/2))
}

// RegionLabel is the host label placement spreads replicas over.
const RegionLabel = "region"
