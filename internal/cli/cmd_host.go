package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
)

const hostRefHelp = `HOST is a host ID, a unique prefix of one, or the host's raft address.`

func newHostCmd(a *app) *cobra.Command {
	c := newGroupCmd("host", "Inspect and administer nodehosts",
		"Inspect and administer the nodehosts that run shard replicas.\n\n"+hostRefHelp)
	c.AddCommand(
		newHostListCmd(a),
		newHostSetStateCmd(a, "cordon", drummerpb.HostAdminAction_HOST_ADMIN_ACTION_CORDON,
			"Stop placing new replicas on a host",
			"Cordon a host: no new replicas are placed on it; its replicas stay."),
		newHostSetStateCmd(a, "uncordon", drummerpb.HostAdminAction_HOST_ADMIN_ACTION_UNCORDON,
			"Allow placing replicas on a host again",
			"Uncordon a host: make it eligible for new replicas again (also cancels a drain)."),
		newHostDrainCmd(a),
		newHostMaintenanceCmd(a),
		newHostRemoveCmd(a),
	)
	return c
}

func newHostListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List nodehosts with their liveness, admin state and replica count",
		Args:  args(cobra.NoArgs, "no arguments"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			d, err := a.drummer()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			hosts, err := client.ListAllHosts(ctx, d, &drummerpb.ListHostsRequest{})
			if err != nil {
				return a.rpcError(err, "list hosts")
			}
			slices.SortFunc(hosts, func(x, y *drummerpb.HostStatus) int { return strings.Compare(x.GetId(), y.GetId()) })
			if a.jsonOutput() {
				out := make([]hostJSON, 0, len(hosts))
				for _, h := range hosts {
					out = append(out, toHostJSON(h))
				}
				return a.printJSON(out)
			}
			return writeHostTable(a.stdout, a.now(), hosts)
		}),
	}
}

func writeHostTable(w io.Writer, now time.Time, hosts []*drummerpb.HostStatus) error {
	t := newTable("id", "raft address", "api address", "state", "admin state", "replicas", "last heartbeat", "labels", "explanation")
	for _, h := range hosts {
		admin := h.GetAdminState()
		if admin == "maintenance" && h.GetMaintenanceUntilUnixMs() != 0 {
			admin += " (ends " + until(now, h.GetMaintenanceUntilUnixMs()) + ")"
		}
		t.add(h.GetId(), h.GetRaftAddress(), h.GetApiAddress(), h.GetState(), admin,
			fmt.Sprint(h.GetReplicas()), ago(now, h.GetLastHeartbeatUnixMs()), formatLabels(h.GetLabels()), h.GetExplanation())
	}
	return t.write(w)
}

// setHostState resolves ref and applies action. It returns the host as the
// server reports it afterwards.
func (a *app) setHostState(cmd *cobra.Command, ref string, action drummerpb.HostAdminAction, dur time.Duration) (*drummerpb.HostStatus, error) {
	d, err := a.drummer()
	if err != nil {
		return nil, err
	}
	h, err := a.lookupHost(cmd, d, ref)
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	resp, err := d.SetHostState(ctx, &drummerpb.SetHostStateRequest{
		HostId:     h.GetId(),
		Action:     action,
		DurationMs: uint64(dur / time.Millisecond),
	})
	if err != nil {
		return nil, a.rpcError(err, "%s host %s (%s)", actionVerb(action), h.GetId(), h.GetRaftAddress())
	}
	if resp.GetHost() != nil {
		return resp.GetHost(), nil
	}
	return h, nil
}

func actionVerb(action drummerpb.HostAdminAction) string {
	switch action {
	case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_CORDON:
		return "cordon"
	case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_UNCORDON:
		return "uncordon"
	case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_DRAIN:
		return "drain"
	case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_MAINTENANCE:
		return "start maintenance of"
	case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_END_MAINTENANCE:
		return "end maintenance of"
	}
	return "change"
}

// printHost prints the outcome of a host state change: the host as JSON,
// or a sentence.
func (a *app) printHost(h *drummerpb.HostStatus, sentence string) error {
	if a.jsonOutput() {
		return a.printJSON(toHostJSON(h))
	}
	_, err := fmt.Fprintln(a.stdout, sentence)
	return err
}

func hostName(h *drummerpb.HostStatus) string {
	if h.GetRaftAddress() == "" {
		return h.GetId()
	}
	return fmt.Sprintf("%s (%s)", h.GetId(), h.GetRaftAddress())
}

func newHostSetStateCmd(a *app, verb string, action drummerpb.HostAdminAction, short, long string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " HOST",
		Short: short,
		Long:  long + "\n\n" + hostRefHelp,
		Args:  args(cobra.ExactArgs(1), "one HOST"),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			h, err := a.setHostState(cmd, args[0], action, 0)
			if err != nil {
				return err
			}
			return a.printHost(h, fmt.Sprintf("host %s %sed; admin state %s", hostName(h), verb, h.GetAdminState()))
		}),
	}
}

func newHostDrainCmd(a *app) *cobra.Command {
	var (
		wait     bool
		timeout  time.Duration
		interval time.Duration
	)
	c := &cobra.Command{
		Use:   "drain HOST",
		Short: "Move every replica off a host",
		Long: `Drain a host: it is cordoned and Drummer moves its replicas to other hosts,
one repair at a time within the repair limits (see 'drummercmd config show').

With --wait, follow the drain until the host holds no replica and every
shard is healthy, printing "draining <id>: N replicas remaining" (rewritten
in place on a terminal, one line per change otherwise). Exit 0 then, 3 when
--timeout expires (the drain goes on), 5 if the drain is cancelled meanwhile
(e.g. by 'host uncordon').

` + hostRefHelp,
		Args: args(cobra.ExactArgs(1), "one HOST"),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			if wait && timeout <= 0 {
				return usageErrorf("--timeout must be positive, e.g. --timeout=10m")
			}
			if interval <= 0 {
				return usageErrorf("--interval must be positive, e.g. --interval=1s")
			}
			h, err := a.setHostState(cmd, args[0], drummerpb.HostAdminAction_HOST_ADMIN_ACTION_DRAIN, 0)
			if err != nil {
				return err
			}
			if !wait {
				return a.printHost(h, fmt.Sprintf("host %s is draining: %s to move; follow with 'drummercmd host list' or 'host drain --wait'",
					hostName(h), plural(int(h.GetReplicas()), "replica", "replicas")))
			}
			if !a.jsonOutput() {
				fmt.Fprintf(a.stdout, "draining host %s\n", hostName(h))
			}
			final, err := a.waitDrained(cmd, h.GetId(), interval, timeout)
			if err != nil {
				return err
			}
			return a.printHost(final, fmt.Sprintf("host %s is drained", hostName(final)))
		}),
	}
	c.Flags().BoolVar(&wait, "wait", false, "wait until the host holds no replica and every shard is healthy")
	c.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "with --wait: give up waiting after this long (exit 3)")
	c.Flags().DurationVar(&interval, "interval", time.Second, "with --wait: how often to poll")
	return c
}

// waitDrained polls until host id holds no replica and every shard is
// healthy.
func (a *app) waitDrained(cmd *cobra.Command, id string, interval, timeout time.Duration) (*drummerpb.HostStatus, error) {
	d, err := a.drummer()
	if err != nil {
		return nil, err
	}
	p := a.newProgress()
	var host *drummerpb.HostStatus
	var unhealthy []*drummerpb.ShardStatus
	err = a.poll(cmd, p, interval, timeout, func(ctx context.Context) (bool, string, error) {
		hosts, err := client.ListAllHosts(ctx, d, &drummerpb.ListHostsRequest{})
		if err != nil {
			return false, "", a.rpcError(err, "list hosts")
		}
		host = nil
		for _, h := range hosts {
			if h.GetId() == id {
				host = h
			}
		}
		if host == nil {
			return false, "", codedErrorf(ExitNotFound, "host %s disappeared while draining (removed?)", id)
		}
		switch host.GetAdminState() {
		case "draining", "drained":
		default:
			return false, "", codedErrorf(ExitConflict, "the drain of host %s was cancelled: its admin state is now %q", id, host.GetAdminState())
		}
		unhealthy, err = client.ListAllShards(ctx, d, &drummerpb.ListShardsRequest{Health: []string{"unhealthy"}})
		if err != nil {
			return false, "", a.rpcError(err, "list shards")
		}
		line := fmt.Sprintf("draining %s: %s remaining", id, plural(int(host.GetReplicas()), "replica", "replicas"))
		if len(unhealthy) > 0 {
			line += fmt.Sprintf(", %s not healthy (%s)", plural(len(unhealthy), "shard", "shards"), healthSummary(unhealthy))
		}
		return host.GetReplicas() == 0 && len(unhealthy) == 0, line, nil
	})
	var te *errPollTimeout
	if errors.As(err, &te) {
		err = &cliError{code: ExitUnavailable, err: fmt.Errorf("host %s not drained: %w", id, err),
			hint: "the drain goes on in the background; run 'drummercmd repair list' and 'drummercmd shard list' to see what holds it up"}
		if len(unhealthy) > 0 {
			err = withHint(err, unhealthyHint(unhealthy))
		}
	}
	return host, err
}

func newHostMaintenanceCmd(a *app) *cobra.Command {
	var (
		dur time.Duration
		end bool
	)
	c := &cobra.Command{
		Use:   "maintenance HOST (--for DURATION | --end)",
		Short: "Start or end a maintenance window of a host",
		Long: `Put a host into maintenance for a while: its replicas are expected to be
away (e.g. for a reboot) and are not repaired while the window lasts.
--end ends the window early.

` + hostRefHelp,
		Example: "  drummercmd host maintenance 10.0.0.5:7001 --for 30m\n  drummercmd host maintenance 3f2a --end",
		Args:    args(cobra.ExactArgs(1), "one HOST"),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			forSet := cmd.Flags().Changed("for")
			switch {
			case forSet && end:
				return usageErrorf("give either --for DURATION or --end, not both")
			case !forSet && !end:
				return usageErrorf("say how long the maintenance lasts with --for, e.g. --for 30m (or end it with --end)")
			case forSet && dur <= 0:
				return usageErrorf("--for must be positive, e.g. --for 30m")
			case forSet && dur%time.Millisecond != 0:
				return usageErrorf("--for must be a whole number of milliseconds")
			}
			action := drummerpb.HostAdminAction_HOST_ADMIN_ACTION_MAINTENANCE
			if end {
				action = drummerpb.HostAdminAction_HOST_ADMIN_ACTION_END_MAINTENANCE
			}
			h, err := a.setHostState(cmd, args[0], action, dur)
			if err != nil {
				return err
			}
			if end {
				return a.printHost(h, fmt.Sprintf("maintenance of host %s ended; admin state %s", hostName(h), h.GetAdminState()))
			}
			msg := fmt.Sprintf("host %s in maintenance for %s", hostName(h), fmtDuration(dur))
			if ms := h.GetMaintenanceUntilUnixMs(); ms != 0 {
				msg += ", until " + clock(ms)
			}
			return a.printHost(h, msg)
		}),
	}
	c.Flags().DurationVar(&dur, "for", 0, "length of the maintenance window, e.g. 30m")
	c.Flags().BoolVar(&end, "end", false, "end the maintenance window now")
	return c
}

func newHostRemoveCmd(a *app) *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "remove HOST",
		Short: "Forget a host",
		Long: `Remove a host from Drummer's records. A host that is still up or holds
replicas is refused (exit 5): drain it ('host drain HOST --wait') and stop its
nodehost first. --force removes it anyway; its replicas are then repaired
elsewhere as if the host were dead.

` + hostRefHelp,
		Args: args(cobra.ExactArgs(1), "one HOST"),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			d, err := a.drummer()
			if err != nil {
				return err
			}
			h, err := a.lookupHost(cmd, d, args[0])
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if _, err := d.RemoveHost(ctx, &drummerpb.RemoveHostRequest{HostId: h.GetId(), Force: force}); err != nil {
				err = a.rpcError(err, "remove host %s", hostName(h))
				if exitCode(err) == ExitConflict && !force {
					err = withHint(err, "drain the host first ('drummercmd host drain "+h.GetId()+" --wait') and stop its nodehost; --force removes it anyway and repairs its replicas elsewhere as if it were dead")
				}
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(struct {
					ID      string `json:"id"`
					Removed bool   `json:"removed"`
				}{h.GetId(), true})
			}
			_, err = fmt.Fprintf(a.stdout, "host %s removed\n", hostName(h))
			return err
		}),
	}
	c.Flags().BoolVar(&force, "force", false, "remove the host even if it still holds replicas")
	return c
}
