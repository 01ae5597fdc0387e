package chaos

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/drummerhq/drummer/internal/testcluster"
)

// Fault kinds the nemesis can inject.
const (
	FaultNodehostKill      = "nodehost-kill"
	FaultNodehostPause     = "nodehost-pause"
	FaultPartition         = "partition"
	FaultMessageLoss       = "message-loss"
	FaultNodehostWipe      = "nodehost-wipe"
	FaultSlowStateMachine  = "slow-state-machine"
	FaultDrummerKill       = "drummer-kill"
	FaultDrummerPause      = "drummer-pause"
	FaultSnapshot          = "snapshot"
	faultDrummerKillLeader = "drummer-kill-leader" // a drummer-kill that hit the scheduler leader
)

// AllFaults lists every fault kind.
var AllFaults = []string{
	FaultNodehostKill, FaultNodehostPause, FaultPartition, FaultMessageLoss, FaultNodehostWipe,
	FaultSlowStateMachine, FaultDrummerKill, FaultDrummerPause, FaultSnapshot,
}

// ParseFaults parses a comma-separated list of fault kinds; "all" means
// every kind, "none" no fault, and "-kind" removes a kind (e.g.
// "all,-nodehost-wipe").
func ParseFaults(s string) ([]string, error) {
	set := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
		case f == "all":
			for _, k := range AllFaults {
				set[k] = true
			}
		case f == "none":
			clear(set)
		case strings.HasPrefix(f, "-") && slices.Contains(AllFaults, f[1:]):
			delete(set, f[1:])
		case slices.Contains(AllFaults, f):
			set[f] = true
		default:
			return nil, fmt.Errorf("unknown fault %q (known: all, none, %s)", f, strings.Join(AllFaults, ", "))
		}
	}
	out := []string{}
	for _, k := range AllFaults {
		if set[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

// Config configures a chaos run. Zero fields take the defaults of Short.
type Config struct {
	// Seed drives the fault schedule and the workload's choices. A run
	// is not exactly reproducible (real processes and timing), but the
	// same seed gives the same schedule of decisions.
	Seed uint64
	// Duration of the fault phase (the workload runs during it).
	Duration time.Duration
	// Nodehosts (5 or 6) and Shards (32..128, 3 replicas each).
	Nodehosts, Shards int
	// Faults enabled (see AllFaults); nil means all.
	Faults []string
	// MaxImpaired bounds the nodehosts killed, paused, partitioned or
	// wiped at the same time (default 2).
	MaxImpaired int
	// FaultGap bounds the random pause between two injections.
	FaultGapMin, FaultGapMax time.Duration
	// DropRateMin/Max bound the message loss rate (0.1%..1% by default).
	DropRateMin, DropRateMax float64
	// SuspectTimeout and DeadTimeout are the drummer runtime settings
	// (defaults 3s and 10s: short enough that repairs happen).
	SuspectTimeout, DeadTimeout time.Duration
	// Workload.
	Workers     int
	HotKeys     int
	ColdKeys    int
	HotFraction float64
	// HotKeyPeriod rotates the hot keys (default 60s).
	HotKeyPeriod time.Duration
	ThinkTime    time.Duration
	OpTimeout    time.Duration
	// Bounds of the phases after the faults stop.
	SetupTimeout    time.Duration
	ConvergeTimeout time.Duration
	// CheckTimeout bounds porcupine per key.
	CheckTimeout time.Duration
	// RTT of the nodehosts in ms (default 50).
	RTT int
	// UnsafeAck starts the nodehosts with --test-unsafe-ack: a broken
	// build that acknowledges proposals before commit. The checker must
	// catch it.
	UnsafeAck bool
	// Diverge starts the first nodehost with --test-diverge: its kv
	// replicas apply an extra hidden write, so the replicas' hashes
	// differ. The checker must catch it.
	Diverge bool
	// Dir holds data directories, logs and artifacts (default: a new
	// temporary directory). It is removed after a passing run unless
	// Keep is set; a failing run always keeps it.
	Dir  string
	Keep bool
	// Bins are prebuilt binaries (built with -tags=dragonboat_monkeytest);
	// when empty they are built into a temporary directory.
	Bins     testcluster.Binaries
	LogLevel string
	// Logf receives progress messages (default: discarded).
	Logf func(format string, args ...any)
	// ReplayPrefix is prepended to the replay command in the summary
	// (default "go run ./cmd/drummer-chaos").
	ReplayPrefix string
	// Replay, when set, replaces the replay command in the summary.
	Replay string
}

// Short is the configuration of the short run in `go test` (about three
// minutes of wall clock on two cores).
func Short() Config {
	return Config{
		Duration: 100 * time.Second, Nodehosts: 5, Shards: 32,
		MaxImpaired: 2, FaultGapMin: time.Second, FaultGapMax: 4 * time.Second,
		DropRateMin: 0.001, DropRateMax: 0.01,
		SuspectTimeout: 3 * time.Second, DeadTimeout: 10 * time.Second,
		Workers: 16, HotKeys: 4, ColdKeys: 1000, HotFraction: 0.3, HotKeyPeriod: time.Minute,
		ThinkTime: 20 * time.Millisecond, OpTimeout: 5 * time.Second,
		SetupTimeout: 2 * time.Minute, ConvergeTimeout: 4 * time.Minute, CheckTimeout: time.Minute,
		RTT: 50, LogLevel: "info",
	}
}

// Long is the configuration of long runs (cmd/drummer-chaos): more shards
// and a sixth nodehost.
func Long() Config {
	c := Short()
	c.Duration = 30 * time.Minute
	c.Nodehosts, c.Shards = 6, 96
	c.ColdKeys = 4000
	c.ConvergeTimeout = 10 * time.Minute
	c.CheckTimeout = 5 * time.Minute
	return c
}

func (c *Config) setDefaults() {
	d := Short()
	if c.Duration <= 0 {
		c.Duration = d.Duration
	}
	if c.Nodehosts <= 0 {
		c.Nodehosts = d.Nodehosts
	}
	if c.Shards <= 0 {
		c.Shards = d.Shards
	}
	if c.Faults == nil {
		c.Faults = AllFaults
	}
	if c.MaxImpaired <= 0 {
		c.MaxImpaired = d.MaxImpaired
	}
	if c.FaultGapMin <= 0 {
		c.FaultGapMin = d.FaultGapMin
	}
	if c.FaultGapMax <= c.FaultGapMin {
		c.FaultGapMax = max(d.FaultGapMax, c.FaultGapMin+time.Second)
	}
	if c.DropRateMin <= 0 {
		c.DropRateMin = d.DropRateMin
	}
	if c.DropRateMax < c.DropRateMin {
		c.DropRateMax = max(d.DropRateMax, c.DropRateMin)
	}
	if c.SuspectTimeout <= 0 {
		c.SuspectTimeout = d.SuspectTimeout
	}
	if c.DeadTimeout <= c.SuspectTimeout {
		c.DeadTimeout = max(d.DeadTimeout, 2*c.SuspectTimeout)
	}
	if c.Workers <= 0 {
		c.Workers = d.Workers
	}
	if c.HotKeys < 0 {
		c.HotKeys = 0
	}
	if c.ColdKeys <= 0 {
		c.ColdKeys = d.ColdKeys
	}
	if c.HotFraction <= 0 || c.HotFraction > 1 {
		c.HotFraction = d.HotFraction
	}
	if c.HotKeyPeriod <= 0 {
		c.HotKeyPeriod = d.HotKeyPeriod
	}
	if c.ThinkTime < 0 {
		c.ThinkTime = 0
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = d.OpTimeout
	}
	if c.SetupTimeout <= 0 {
		c.SetupTimeout = d.SetupTimeout
	}
	if c.ConvergeTimeout <= 0 {
		c.ConvergeTimeout = d.ConvergeTimeout
	}
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = d.CheckTimeout
	}
	if c.RTT <= 0 {
		c.RTT = d.RTT
	}
	if c.LogLevel == "" {
		c.LogLevel = d.LogLevel
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if c.ReplayPrefix == "" {
		c.ReplayPrefix = "go run ./cmd/drummer-chaos"
	}
}

func (c *Config) validate() error {
	switch {
	case c.Nodehosts < 4:
		return fmt.Errorf("need at least 4 nodehosts for 3-replica shards with repairs, got %d", c.Nodehosts)
	case c.Shards < 1 || c.Shards > 10000:
		return fmt.Errorf("shards %d: want 1..10000", c.Shards)
	case c.DropRateMax > 0.5:
		return fmt.Errorf("drop rate %v: want at most 0.5", c.DropRateMax)
	}
	for _, f := range c.Faults {
		if !slices.Contains(AllFaults, f) {
			return fmt.Errorf("unknown fault %q", f)
		}
	}
	return nil
}

func (c *Config) enabled(f string) bool { return slices.Contains(c.Faults, f) }

// ReplayCommand is the command that runs the same configuration again.
func (c *Config) ReplayCommand() string {
	if c.Replay != "" {
		return c.Replay
	}
	faults := strings.Join(c.Faults, ",")
	if slices.Equal(c.Faults, AllFaults) {
		faults = "all"
	} else if faults == "" {
		faults = "none"
	}
	s := fmt.Sprintf("%s -seed %d -duration %s -nodehosts %d -shards %d -workers %d -faults %s -max-impaired %d",
		c.ReplayPrefix, c.Seed, c.Duration, c.Nodehosts, c.Shards, c.Workers, faults, c.MaxImpaired)
	if c.UnsafeAck {
		s += " -unsafe-ack"
	}
	if c.Diverge {
		s += " -diverge"
	}
	return s
}
