package cli

import (
	"context"
	"fmt"
	"sync"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/drummerhq/drummer/api/drummerpb"
)

type endpointStatusJSON struct {
	Endpoint       string `json:"endpoint"`
	ReplicaID      uint64 `json:"replica_id"`
	RaftAddress    string `json:"raft_address"`
	RaftLeaderID   uint64 `json:"raft_leader_id"`
	Scheduler      bool   `json:"scheduler"`
	Epoch          uint64 `json:"epoch"`
	DBAppliedIndex uint64 `json:"db_applied_index"`
	DBHash         string `json:"db_hash"`
	HostsReporting uint64 `json:"hosts_reporting"`
	Removed        bool   `json:"removed"`
	Version        string `json:"version"`
	Error          string `json:"error"`
}

func newEndpointCmd(a *app) *cobra.Command {
	c := newGroupCmd("endpoint", "Inspect each drummer server",
		`Commands that talk to every endpoint in --endpoints directly, not only to
the leader.`)
	status := &cobra.Command{
		Use:   "status",
		Short: "Show each drummer server's view: leader, DB applied index and hash",
		Long: `Asks every endpoint for its own status. Servers at the same applied index
must show the same DB hash. Exits 3 if an endpoint does not answer (the
others are still shown).`,
		Args: args(cobra.NoArgs, "no arguments"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			if err := a.settle(); err != nil {
				return err
			}
			eps, err := splitEndpoints(a.effectiveEndpoints())
			if err != nil {
				return usageErrorf("%v", err)
			}
			creds, err := a.dialCredentials()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			out := make([]endpointStatusJSON, len(eps))
			var wg sync.WaitGroup
			for i, ep := range eps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out[i] = endpointStatus(ctx, ep, creds)
				}()
			}
			wg.Wait()
			failed := 0
			for _, s := range out {
				if s.Error != "" {
					failed++
				}
			}
			if a.jsonOutput() {
				if err := a.printJSON(out); err != nil {
					return err
				}
			} else {
				t := newTable("endpoint", "id", "raft leader", "scheduler", "epoch", "applied", "db hash", "hosts", "error")
				for _, s := range out {
					t.add(s.Endpoint, fmt.Sprint(s.ReplicaID), fmt.Sprint(s.RaftLeaderID), fmt.Sprint(s.Scheduler),
						fmt.Sprint(s.Epoch), fmt.Sprint(s.DBAppliedIndex), s.DBHash, fmt.Sprint(s.HostsReporting), s.Error)
				}
				if err := t.write(a.stdout); err != nil {
					return err
				}
			}
			if failed > 0 {
				return &cliError{code: ExitUnavailable, err: fmt.Errorf("%d of %d endpoints did not answer", failed, len(eps))}
			}
			return nil
		}),
	}
	c.AddCommand(status)
	return c
}

func endpointStatus(ctx context.Context, ep string, creds grpc.DialOption) endpointStatusJSON {
	out := endpointStatusJSON{Endpoint: ep}
	cc, err := grpc.NewClient(ep, creds)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	defer cc.Close()
	s, err := drummerpb.NewDrummerClient(cc).GetServerStatus(ctx, &drummerpb.GetServerStatusRequest{})
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.ReplicaID, out.RaftAddress, out.RaftLeaderID = s.ReplicaId, s.RaftAddress, s.RaftLeaderId
	out.Scheduler, out.Epoch, out.DBAppliedIndex = s.Scheduler, s.Epoch, s.DbAppliedIndex
	out.DBHash, out.HostsReporting, out.Removed, out.Version = fmt.Sprintf("%016x", s.DbHash), s.HostsReporting, s.Removed, s.Version
	return out
}
