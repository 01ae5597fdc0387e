package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/settings"
)

// balancePageSize is the hosts asked per GetBalanceStatus page (the
// server's default).
const balancePageSize = 500

func newBalanceCmd(a *app) *cobra.Command {
	c := newGroupCmd("balance", "See how replicas and leaders are spread over the hosts",
		`Drummer moves replicas from hosts above their fair share to hosts below it
(add before remove, after every repair) and transfers leadership so that each
host leads its fair share of the shards it holds. The settings are runtime
settings: drummercmd config set balance_replicas=off, balance_threshold=10%, ...`)
	var limit int
	status := &cobra.Command{
		Use:   "status [--limit N]",
		Short: "Per host: replicas and leaders against their targets, moves in flight, and why nothing moves",
		Long: `Show the balancing settings in force, the balancing moves in flight and
recent leader transfers, and for each host its replicas and leaders against
its fair share (TARGET), the moves in flight onto and off it, and why it is
not balanced further when it is out of balance. A line before the table says
why nothing moves at all, when nothing does.

Hosts are fetched a page at a time; --limit stops after that many.`,
		Args: args(cobra.NoArgs, "no arguments"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageErrorf("--limit %d: want 0 (all hosts) or a positive number", limit)
			}
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			size := balancePageSize
			if limit > 0 {
				size = min(limit, size)
			}
			req := &drummerpb.GetBalanceStatusRequest{PageSize: uint32(size)}
			var first *drummerpb.GetBalanceStatusResponse
			var hosts []*drummerpb.BalanceHost
			truncated := false
			for range maxBalancePages {
				resp, err := d.GetBalanceStatus(ctx, req)
				if err != nil {
					return a.rpcError(err, "get balance status")
				}
				if first == nil {
					first = resp
				}
				hosts = append(hosts, resp.GetHosts()...)
				if limit > 0 && len(hosts) >= limit {
					truncated = len(hosts) > limit || resp.GetNextPageToken() != ""
					hosts = hosts[:limit]
					break
				}
				if resp.GetNextPageToken() == "" || resp.GetNextPageToken() == req.GetPageToken() {
					break
				}
				req.PageToken = resp.GetNextPageToken()
			}
			if a.jsonOutput() {
				return a.printJSON(toBalanceJSON(first, hosts, truncated))
			}
			return a.writeBalance(first, hosts, truncated)
		}),
	}
	status.Flags().IntVar(&limit, "limit", 0, "show at most this many hosts (0: all)")
	c.AddCommand(status)
	return c
}

// maxBalancePages bounds the paging loop against a server that never ends
// it (a million hosts at the default page size).
const maxBalancePages = 2000

func (a *app) writeBalance(s *drummerpb.GetBalanceStatusResponse, hosts []*drummerpb.BalanceHost, truncated bool) error {
	st := s.GetSettings()
	fmtSet := func(key string, v uint64) string {
		k, _ := settings.Lookup(key)
		return k.Format(v)
	}
	on := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	kvs := [][2]string{
		{"Replica balancing", on(st.GetReplicas())},
		{"Leader balancing", on(st.GetLeaders())},
		{"Threshold", fmt.Sprintf("%s of the target, at least %d replicas", fmtSet("balance_threshold", uint64(st.GetThresholdPct())), st.GetMinExcess())},
		{"Limits", fmt.Sprintf("%d moves in flight, %d leader transfers/s, cool-down %s",
			st.GetMaxMoves(), st.GetMaxLeaderTransfers(), fmtMillis(st.GetCooldownMs()))},
		{"Moves in flight", strconv.FormatUint(uint64(s.GetMovesInFlight()), 10)},
		{"Leader transfers", fmt.Sprintf("%d recently", s.GetLeaderTransfersRecent())},
	}
	if e := s.GetExplanation(); e != "" {
		kvs = append(kvs, [2]string{"Why nothing moves", e})
	}
	if err := writeKeyValues(a.stdout, kvs); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout)
	t := newTable("host", "address", "replicas", "target", "leaders", "target", "moves in/out", "why")
	for _, h := range hosts {
		t.add(shortID(h.GetHostId()), h.GetRaftAddress(),
			strconv.FormatUint(h.GetReplicas(), 10), fmtTarget(h.GetReplicaTarget()),
			strconv.FormatUint(h.GetLeaders(), 10), fmtTarget(h.GetLeaderTarget()),
			fmt.Sprintf("%d/%d", h.GetMovesIn(), h.GetMovesOut()), h.GetExplanation())
	}
	if err := t.write(a.stdout); err != nil {
		return err
	}
	if truncated {
		fmt.Fprintf(a.stdout, "(first %s shown; raise --limit for more)\n", plural(len(hosts), "host", "hosts"))
	}
	return nil
}

// fmtTarget prints a fair share with one decimal (18.0, 6.7).
func fmtTarget(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

type balanceSettingsJSON struct {
	Replicas           bool   `json:"replicas"`
	Leaders            bool   `json:"leaders"`
	ThresholdPct       uint32 `json:"threshold_pct"`
	MinExcess          uint32 `json:"min_excess"`
	MaxMoves           uint32 `json:"max_moves"`
	MaxLeaderTransfers uint32 `json:"max_leader_transfers"` // per second
	CooldownMs         uint64 `json:"cooldown_ms"`
}

type balanceHostJSON struct {
	HostID        string  `json:"host_id"`
	RaftAddress   string  `json:"raft_address"`
	Replicas      uint64  `json:"replicas"`
	ReplicaTarget float64 `json:"replica_target"`
	Leaders       uint64  `json:"leaders"`
	LeaderTarget  float64 `json:"leader_target"`
	MovesIn       uint32  `json:"moves_in"`
	MovesOut      uint32  `json:"moves_out"`
	Explanation   string  `json:"explanation"`
}

type balanceJSON struct {
	Settings              balanceSettingsJSON `json:"settings"`
	MovesInFlight         uint32              `json:"moves_in_flight"`
	LeaderTransfersRecent uint32              `json:"leader_transfers_recent"`
	Explanation           string              `json:"explanation"`
	Hosts                 []balanceHostJSON   `json:"hosts"`
	// More hosts exist than --limit let through.
	Truncated bool `json:"truncated"`
}

func toBalanceJSON(s *drummerpb.GetBalanceStatusResponse, hosts []*drummerpb.BalanceHost, truncated bool) balanceJSON {
	st := s.GetSettings()
	out := balanceJSON{
		Settings: balanceSettingsJSON{
			Replicas: st.GetReplicas(), Leaders: st.GetLeaders(), ThresholdPct: st.GetThresholdPct(), MinExcess: st.GetMinExcess(),
			MaxMoves: st.GetMaxMoves(), MaxLeaderTransfers: st.GetMaxLeaderTransfers(), CooldownMs: st.GetCooldownMs(),
		},
		MovesInFlight:         s.GetMovesInFlight(),
		LeaderTransfersRecent: s.GetLeaderTransfersRecent(),
		Explanation:           s.GetExplanation(),
		Hosts:                 make([]balanceHostJSON, 0, len(hosts)),
		Truncated:             truncated,
	}
	for _, h := range hosts {
		out.Hosts = append(out.Hosts, balanceHostJSON{
			HostID: h.GetHostId(), RaftAddress: h.GetRaftAddress(),
			Replicas: h.GetReplicas(), ReplicaTarget: h.GetReplicaTarget(),
			Leaders: h.GetLeaders(), LeaderTarget: h.GetLeaderTarget(),
			MovesIn: h.GetMovesIn(), MovesOut: h.GetMovesOut(), Explanation: h.GetExplanation(),
		})
	}
	return out
}
