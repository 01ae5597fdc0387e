package fleet

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/drummerhq/drummer/internal/testcluster"
)

// The childproc spawner thread lives as long as the process by design.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/drummerhq/drummer/internal/childproc.spawner"))
}

// TestSmallFleet runs the bench end to end on a small fleet: three real
// drummer processes (mutual TLS, a certificate per host), 200 simulated
// hosts, a launch, two hosts killed and repaired, the drummer leader
// SIGKILLed and a shard created right after placed, the leader restarted,
// every shard healthy again, then 20 empty hosts joining and the replicas
// balanced over them.
func TestSmallFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts drummer processes")
	}
	testcluster.Exclusive(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := Config{
		Hosts: 200, ReplicasPerHost: 6,
		Scenarios:      []string{ScenarioKill, ScenarioLeaderKill, ScenarioJoin},
		Kill:           2,
		Join:           20,
		ReportInterval: 500 * time.Millisecond, SuspectTimeout: 3 * time.Second, DeadTimeout: 6 * time.Second,
		Dir:                  t.TempDir(),
		PollEvery:            250 * time.Millisecond,
		Settle:               2 * time.Second,
		PhaseTimeout:         4 * time.Minute,
		RestartKilledDrummer: true,
		Logf:                 t.Logf,
	}
	res, err := Run(ctx, cfg)
	if res != nil {
		var b strings.Builder
		_ = res.WriteTable(&b)
		t.Logf("\n%s", b.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.ViolationCount != 0 {
		t.Fatalf("the model saw %d safety violations: %v", res.ViolationCount, res.Violations)
	}
	if res.Shards != 400 || res.ModelShards != 401 {
		t.Fatalf("%d shards defined, %d formed in the model; want 400 and one more after the failover", res.Shards, res.ModelShards)
	}
	if len(res.Kills) != 1 || res.Kills[0].Replicas == 0 || len(res.LeaderKills) != 1 || res.LeaderKills[0].KillToPlacedSeconds <= 0 {
		t.Fatalf("scenarios: kills %+v leader kills %+v", res.Kills, res.LeaderKills)
	}
	for _, p := range res.Phases {
		if len(p.HostsNotUp) > 0 {
			t.Logf("phase %s: hosts not up %v", p.Name, p.HostsNotUp)
		}
	}
	if len(res.Joins) != 1 || res.Joins[0].BalancedSeconds <= 0 || res.Joins[0].Moved < res.Joins[0].MinMoves {
		t.Fatalf("join: %+v", res.Joins)
	}
	var steady *Phase
	for _, p := range res.Phases {
		if p.Name == ScenarioLaunch {
			steady = p
		}
	}
	if steady == nil || steady.Reports == 0 || steady.P50Ms <= 0 {
		t.Fatalf("no reports measured: %+v", steady)
	}
}
