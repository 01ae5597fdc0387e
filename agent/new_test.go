package agent

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"

	"github.com/drummerhq/drummer/internal/testcluster"
	"github.com/drummerhq/drummer/kv"
)

// Dragonboat calls the agent's event listener from its own goroutines as
// soon as the NodeHost runs, while New is still setting the agent up: the
// listener must not read fields New writes afterwards (run under -race).
func TestEventsDuringNewDoNotRace(t *testing.T) {
	ports, err := testcluster.FreePorts("127.0.0.1", 3)
	if err != nil {
		t.Fatal(err)
	}
	raft := fmt.Sprintf("127.0.0.1:%d", ports[0])
	cfg := Config{
		RaftAddress:      raft,
		APIAddress:       fmt.Sprintf("127.0.0.1:%d", ports[1]),
		DataDir:          t.TempDir(),
		DrummerEndpoints: []string{fmt.Sprintf("127.0.0.1:%d", ports[2])}, // nothing listens: reports fail, harmlessly
		DeploymentID:     1,
		RTTMillisecond:   5,
		Insecure:         true,
		Logger:           slog.New(slog.DiscardHandler),
		NodeHostStarted: func(nh *dragonboat.NodeHost) {
			// A replica that elects itself at once: leader and
			// membership events flow while New goes on.
			err := nh.StartReplica(map[uint64]dragonboat.Target{1: raft}, false, kv.NewStateMachine,
				config.Config{ShardID: 99, ReplicaID: 1, ElectionRTT: 4, HeartbeatRTT: 1, CheckQuorum: true})
			if err != nil {
				t.Error(err)
			}
			time.Sleep(50 * time.Millisecond)
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	a.Close()
}
