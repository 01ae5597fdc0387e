package playground

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/childproc"
	"github.com/drummerhq/drummer/internal/devcluster"
	"github.com/drummerhq/drummer/internal/devctl"
)

// upWait bounds how long an action waits for a (re)started host to
// report; the action is done either way.
const upWait = 45 * time.Second

func (p *Playground) handle(ctx context.Context, req devctl.Request) devctl.Response {
	if req.Op == devctl.OpStatus {
		return p.status(ctx)
	}
	p.actMu.Lock()
	defer p.actMu.Unlock()
	if req.Op == devctl.OpAdd {
		return p.add(ctx)
	}
	h := p.hostByN(req.Host)
	if h == nil {
		return devctl.Response{Code: devctl.CodeNotFound, Error: fmt.Sprintf("no host %d: the hosts are 1 to %d (see '%s'); '%s' adds one",
			req.Host, len(p.snapshotHosts()), p.devCmd("status"), p.devCmd("add"))}
	}
	switch req.Op {
	case devctl.OpKill:
		return p.kill(ctx, h)
	case devctl.OpPause:
		return p.pause(ctx, h)
	case devctl.OpResume:
		return p.resume(ctx, h)
	case devctl.OpRestart:
		return p.restart(ctx, h)
	case devctl.OpWipe:
		return p.wipe(ctx, h, req.Force)
	}
	return devctl.Response{Code: devctl.CodeUsage, Error: fmt.Sprintf("unknown operation %q", req.Op)}
}

// observe asks the drummer leader for the runtime configuration, hosts
// and shards. An error leaves the action to go ahead without a forecast.
func (p *Playground) observe(ctx context.Context) (*world, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg, err := p.d.GetConfig(ctx, &drummerpb.GetConfigRequest{})
	if err != nil {
		return nil, fmt.Errorf("runtime configuration: %w", err)
	}
	hs, err := client.ListAllHosts(ctx, p.d, &drummerpb.ListHostsRequest{})
	if err != nil {
		return nil, fmt.Errorf("hosts: %w", err)
	}
	ss, err := client.ListAllShards(ctx, p.d, &drummerpb.ListShardsRequest{})
	if err != nil {
		return nil, fmt.Errorf("shards: %w", err)
	}
	w := &world{cfg: cfg, hosts: hs, shards: ss, down: map[string]bool{}, now: time.Now()}
	for _, h := range p.snapshotHosts() {
		if h.proc.State() == childproc.Running {
			continue
		}
		for _, r := range hs {
			if r.RaftAddress == h.raft {
				w.down[r.Id] = true
			}
		}
	}
	return w, nil
}

// identity is the drummer host ID now on h's address ("" if unknown).
func (w *world) identity(h *host) string {
	if w == nil {
		return ""
	}
	if c := current(w.hosts, h.raft); c != nil {
		return c.Id
	}
	return ""
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func noForecast(err error) string {
	return fmt.Sprintf("(No forecast: the drummers did not answer: %v.)\n", err)
}

func (p *Playground) kill(ctx context.Context, h *host) devctl.Response {
	if h.proc.State() == childproc.Stopped {
		return devctl.Response{Code: devctl.CodeConflict, Error: fmt.Sprintf("host %d is not running; '%s' starts it", h.n, p.devCmd(fmt.Sprintf("restart %d", h.n)))}
	}
	w, werr := p.observe(ctx)
	pid := h.proc.PID()
	h.proc.Kill()
	p.mu.Lock()
	h.stoppedAt, h.stoppedBy, h.pausedAt = time.Now(), "killed", time.Time{}
	p.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "Killed host %d (pid %d) with SIGKILL: no clean shutdown, as when a machine dies.\n\n", h.n, pid)
	if werr != nil {
		b.WriteString(noForecast(werr))
	} else {
		id := w.identity(h)
		w.down[id] = true
		fmt.Fprintln(&b, "What happens next:")
		for _, l := range w.lossLines(h.n, id, fmt.Sprintf("host %d", h.n)) {
			fmt.Fprintln(&b, l)
		}
	}
	fmt.Fprintf(&b, "\nWatch it heal:  %s shard list     (run it again every few seconds)\n", p.opts.Commands.Drummercmd)
	fmt.Fprintf(&b, "           or:  %s wait --healthy --timeout 2m\n", p.opts.Commands.Drummercmd)
	fmt.Fprintf(&b, "Bring it back:  %s     (same data, same identity)\n", p.devCmd(fmt.Sprintf("restart %d", h.n)))
	return devctl.Response{Output: b.String()}
}

func (p *Playground) pause(ctx context.Context, h *host) devctl.Response {
	switch h.proc.State() {
	case childproc.Stopped:
		return devctl.Response{Code: devctl.CodeConflict, Error: fmt.Sprintf("host %d is not running; '%s' starts it", h.n, p.devCmd(fmt.Sprintf("restart %d", h.n)))}
	case childproc.Paused:
		return devctl.Response{Code: devctl.CodeConflict, Error: fmt.Sprintf("host %d is already paused; '%s' continues it", h.n, p.devCmd(fmt.Sprintf("resume %d", h.n)))}
	}
	w, werr := p.observe(ctx)
	pid := h.proc.PID()
	if err := h.proc.Pause(); err != nil {
		return devctl.Response{Code: devctl.CodeFailure, Error: err.Error()}
	}
	p.mu.Lock()
	h.pausedAt = time.Now()
	p.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "Paused host %d (pid %d) with SIGSTOP: the process is frozen, its connections stay open, and it\n", h.n, pid)
	fmt.Fprintf(&b, "neither reports nor answers Raft, like a host stuck in a long pause or cut off by the network.\n\n")
	if werr != nil {
		b.WriteString(noForecast(werr))
	} else {
		id := w.identity(h)
		w.down[id] = true
		fmt.Fprintln(&b, "What happens next, unless you resume it:")
		for _, l := range w.lossLines(h.n, id, fmt.Sprintf("host %d", h.n)) {
			fmt.Fprintln(&b, l)
		}
		fmt.Fprintf(&b, "\nResume it:  %s\n", p.devCmd(fmt.Sprintf("resume %d", h.n)))
		fmt.Fprintf(&b, "            within %s nothing moves; later, the copies it still has of re-created replicas are removed as zombies.\n", w.deadTimeout())
	}
	return devctl.Response{Output: b.String()}
}

func (p *Playground) resume(ctx context.Context, h *host) devctl.Response {
	if st := h.proc.State(); st != childproc.Paused {
		return devctl.Response{Code: devctl.CodeConflict, Error: fmt.Sprintf("host %d is not paused (it is %s)", h.n, p.processState(h))}
	}
	w, werr := p.observe(ctx)
	pid := h.proc.PID()
	if err := h.proc.Resume(); err != nil {
		return devctl.Response{Code: devctl.CodeFailure, Error: err.Error()}
	}
	p.mu.Lock()
	pausedAt := h.pausedAt
	h.pausedAt = time.Time{}
	p.mu.Unlock()
	var b strings.Builder
	if pausedAt.IsZero() {
		fmt.Fprintf(&b, "Resumed host %d (pid %d) with SIGCONT.\n\n", h.n, pid)
	} else {
		fmt.Fprintf(&b, "Resumed host %d (pid %d) with SIGCONT after %s paused.\n\n", h.n, pid, human(time.Since(pausedAt)))
	}
	if werr != nil {
		b.WriteString(noForecast(werr))
		return devctl.Response{Output: b.String()}
	}
	id := w.identity(h)
	silent := w.silence(id)
	fmt.Fprintf(&b, "What happens next: it reports again within %s and is up.\n", ms(w.cfg.GetReportIntervalMs()))
	if r := w.host(id); (r != nil && r.State == "dead") || silent >= w.deadTimeout() {
		fmt.Fprintf(&b, "It was declared dead while frozen (silent for %s, dead_timeout is %s): the replicas Drummer\n", silent.Round(time.Second), w.deadTimeout())
		fmt.Fprintf(&b, "re-created elsewhere make its copies zombies, which Drummer removes from it; the others carry on, and it takes new work.\n")
	} else {
		fmt.Fprintf(&b, "It was silent for %s, less than dead_timeout (%s): nothing moved; its replicas catch up from their leaders.\n", human(silent), w.deadTimeout())
	}
	return devctl.Response{Output: b.String()}
}

func (p *Playground) restart(ctx context.Context, h *host) devctl.Response {
	w, werr := p.observe(ctx)
	var b strings.Builder
	state := h.proc.State()
	var stopped string
	if state != childproc.Stopped {
		pid := h.proc.PID()
		if err := h.proc.Stop(10 * time.Second); err != nil && !isExit(err) {
			stopped = fmt.Sprintf("stopped pid %d (%v)", pid, err)
		} else {
			stopped = fmt.Sprintf("stopped pid %d (SIGTERM: a clean shutdown)", pid)
		}
	}
	start := time.Now()
	if err := h.proc.Start(); err != nil {
		return devctl.Response{Code: devctl.CodeFailure, Error: err.Error()}
	}
	p.mu.Lock()
	h.stoppedAt, h.stoppedBy, h.pausedAt = time.Time{}, "", time.Time{}
	p.mu.Unlock()
	id := w.identity(h)
	idText := ""
	if id != "" {
		idText = fmt.Sprintf(" (host %s)", short(id))
	}
	if stopped != "" {
		fmt.Fprintf(&b, "Restarted host %d: %s and started pid %d with the same data directory,\n", h.n, stopped, h.proc.PID())
	} else {
		fmt.Fprintf(&b, "Started host %d (pid %d) with the same data directory,\n", h.n, h.proc.PID())
	}
	fmt.Fprintf(&b, "so it keeps its identity%s and its replicas' data.\n\n", idText)
	if werr != nil {
		b.WriteString(noForecast(werr))
	} else {
		fmt.Fprintln(&b, "What happens next: it reports again and restarts its replicas from their logs; they catch up from their leaders.")
		silent := w.silence(id)
		r := w.host(id)
		switch {
		case r != nil && (r.State == "dead" || (state != childproc.Running && silent >= w.deadTimeout())):
			fmt.Fprintf(&b, "It was dead (silent for %s): the replicas Drummer re-created elsewhere meanwhile make its copies\n", silent.Round(time.Second))
			fmt.Fprintf(&b, "zombies, which Drummer removes from it; then it takes new work.\n")
		case state != childproc.Running:
			fmt.Fprintf(&b, "It was silent for %s, less than dead_timeout (%s): nothing moved.\n", human(silent), w.deadTimeout())
		default:
			fmt.Fprintf(&b, "A restart takes less than dead_timeout (%s): nothing moves.\n", w.deadTimeout())
		}
	}
	b.WriteString(p.upLine(ctx, h, start, ""))
	return devctl.Response{Output: b.String()}
}

func isExit(err error) bool {
	var ee interface{ ExitCode() int }
	return errors.As(err, &ee)
}

func (p *Playground) wipe(ctx context.Context, h *host, force bool) devctl.Response {
	w, werr := p.observe(ctx)
	oldID := w.identity(h)
	var im impact
	if werr == nil && oldID != "" {
		w.down[oldID] = true
		im = w.impactOf(oldID)
		if len(im.lost) > 0 && !force {
			return devctl.Response{Code: devctl.CodeConflict, Error: fmt.Sprintf(
				"wiping host %d would lose %s for good: without its replicas they keep fewer than a quorum of replicas anywhere, and Drummer never repairs below quorum; bring their other hosts back first ('%s' shows which are down), or wipe anyway with --force",
				h.n, shardList(im.lost), p.devCmd("status"))}
		}
	}
	var b strings.Builder
	killed := "it was not running"
	if h.proc.State() != childproc.Stopped {
		killed = fmt.Sprintf("killed pid %d (SIGKILL)", h.proc.PID())
		h.proc.Kill()
	}
	if err := os.RemoveAll(h.dataDir); err != nil {
		return devctl.Response{Code: devctl.CodeFailure, Error: fmt.Sprintf("host %d is stopped but its data directory could not be deleted: %v", h.n, err)}
	}
	start := time.Now()
	if err := h.proc.Start(); err != nil {
		return devctl.Response{Code: devctl.CodeFailure, Error: err.Error()}
	}
	p.mu.Lock()
	h.stoppedAt, h.stoppedBy, h.pausedAt = time.Time{}, "", time.Time{}
	p.mu.Unlock()
	fmt.Fprintf(&b, "Wiped host %d: %s, deleted its data directory %s\n", h.n, killed, h.dataDir)
	fmt.Fprintf(&b, "and started pid %d on the same addresses: a new nodehost identity with no replicas, as when a\n", h.proc.PID())
	fmt.Fprintf(&b, "machine comes back with an empty disk.\n\n")
	switch {
	case werr != nil:
		b.WriteString(noForecast(werr))
	case oldID == "":
		fmt.Fprintln(&b, "It had not registered before: there is nothing to repair.")
	default:
		who := fmt.Sprintf("the old identity %s", short(oldID))
		fmt.Fprintln(&b, "What happens next:")
		wait := w.suspectTimeout() - w.silence(oldID)
		fmt.Fprintf(&b, "  %-8s the new identity registers (once %s has been silent for suspect_timeout, %s);\n", secs(wait), who, w.suspectTimeout())
		fmt.Fprintf(&b, "           Drummer marks %s replaced (its data is gone) and dead at once\n", who)
		for _, l := range im.replicaLines(who, ", the new identity among them") {
			fmt.Fprintln(&b, l)
		}
		fmt.Fprintln(&b, "           and the old record is forgotten once it holds no replica")
	}
	b.WriteString(p.upLine(ctx, h, start, oldID))
	return devctl.Response{Output: b.String()}
}

func (p *Playground) add(ctx context.Context) devctl.Response {
	p.mu.Lock()
	n := len(p.hosts) + 1
	p.mu.Unlock()
	if n > devctl.MaxHost {
		return devctl.Response{Code: devctl.CodeConflict, Error: fmt.Sprintf("the playground has %d hosts, the most its port layout allows", n-1)}
	}
	h, err := p.newHost(n)
	if err != nil {
		return devctl.Response{Code: devctl.CodeFailure, Error: err.Error()}
	}
	if err := devcluster.CheckPorts(h.raft, h.api); err != nil {
		return devctl.Response{Code: devctl.CodeConflict, Error: err.Error()}
	}
	start := time.Now()
	if err := h.proc.Start(); err != nil {
		return devctl.Response{Code: devctl.CodeFailure, Error: err.Error()}
	}
	p.mu.Lock()
	p.hosts = append(p.hosts, h)
	p.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "Added host %d (pid %d) in region %s: raft %s, API %s,\n", n, h.proc.PID(), h.region, h.raft, h.api)
	fmt.Fprintf(&b, "data directory %s, log %s.\n\n", h.dataDir, h.proc.LogPath)
	fmt.Fprintln(&b, "What happens next: it registers and is up within a few seconds. Replicas that run elsewhere stay")
	fmt.Fprintln(&b, "where they are (Drummer does not rebalance); repairs and new shards can use it.")
	b.WriteString(p.upLine(ctx, h, start, ""))
	return devctl.Response{Output: b.String()}
}

// upLine waits (at most upWait) until host h reports after since with
// a registered identity other than notID, and says so.
func (p *Playground) upLine(ctx context.Context, h *host, since time.Time, notID string) string {
	ctx, cancel := context.WithTimeout(ctx, upWait)
	defer cancel()
	for {
		hs, err := p.d.ListHosts(ctx, &drummerpb.ListHostsRequest{})
		if err == nil {
			c := current(hs.Hosts, h.raft)
			if registered(c) && c.Id != notID && time.UnixMilli(c.LastHeartbeatUnixMs).After(since) {
				return fmt.Sprintf("\nHost %d is up as host %s (registered %s after the start).\n", h.n, short(c.Id), human(time.Since(since)))
			}
		}
		if h.proc.State() == childproc.Stopped {
			return fmt.Sprintf("\nHost %d exited (%v); its log %s ends with:\n%s\n", h.n, h.proc.ExitErr(), h.proc.LogPath, h.proc.Tail(1500))
		}
		select {
		case <-ctx.Done():
			return fmt.Sprintf("\nHost %d has not registered yet after %s; its log: %s\n", h.n, time.Since(since).Round(time.Second), h.proc.LogPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
