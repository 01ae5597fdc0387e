package playground

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/childproc"
	"github.com/drummerhq/drummer/internal/devctl"
)

// Commands are how printed hints spell the programs.
type Commands struct {
	// Drummer runs the drummer command, e.g. "go run ./cmd/drummer" or
	// "bin/drummer".
	Drummer string
	// Drummercmd runs the operator CLI.
	Drummercmd string
	// GoRun is set when the hints are `go run` forms (they work from the
	// repository's root).
	GoRun bool
}

// DetectCommands spells the programs the way the user ran this one:
// `go run ./cmd/...` when exe was built by go run, else the path of exe
// (its bare name when it is the one found in PATH) and of a drummercmd
// next to it.
func DetectCommands(exe string) Commands {
	if strings.Contains(exe, string(filepath.Separator)+"go-build") {
		return Commands{Drummer: "go run ./cmd/drummer", Drummercmd: "go run ./cmd/drummercmd", GoRun: true}
	}
	c := Commands{Drummer: exe, Drummercmd: "drummercmd"}
	if p, err := exec.LookPath(filepath.Base(exe)); err == nil && p == exe {
		c.Drummer = filepath.Base(exe)
	}
	sib := filepath.Join(filepath.Dir(exe), "drummercmd")
	if p, err := exec.LookPath(sib); err == nil {
		c.Drummercmd = p
		if q, err := exec.LookPath("drummercmd"); err == nil && q == p {
			c.Drummercmd = "drummercmd"
		}
	}
	return c
}

// devCmd spells `drummer dev ARGS`, naming the data directory when the
// user chose one (without it, the command finds the dev that runs).
func (p *Playground) devCmd(args string) string {
	s := p.opts.Commands.Drummer + " dev " + args
	if p.opts.DataDir != "" {
		s += " --data-dir " + p.DataDir
	}
	return s
}

func (p *Playground) processState(h *host) string {
	st := h.proc.State()
	if st != childproc.Stopped {
		return st.String()
	}
	p.mu.Lock()
	by := h.stoppedBy
	p.mu.Unlock()
	if by != "" {
		return by
	}
	if h.proc.StartedAt().IsZero() {
		return "stopped"
	}
	return "exited"
}

// Hosts describes every playground host: its process from the kernel, its
// liveness and replicas from the drummer leader (left empty, with the
// error, when the leader does not answer).
func (p *Playground) Hosts(ctx context.Context) ([]devctl.HostInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	hs, err := p.d.ListHosts(ctx, &drummerpb.ListHostsRequest{})
	var recs []*drummerpb.HostStatus
	if err == nil {
		recs = hs.Hosts
	}
	var out []devctl.HostInfo
	for _, h := range p.snapshotHosts() {
		hi := devctl.HostInfo{
			N: h.n, PID: h.proc.PID(), Process: p.processState(h), Region: h.region,
			RaftAddress: h.raft, APIAddress: h.api, DataDir: h.dataDir, Log: h.proc.LogPath,
		}
		if c := current(recs, h.raft); c != nil {
			hi.HostID, hi.State, hi.Replicas = c.Id, c.State, int(c.Replicas)
		}
		out = append(out, hi)
	}
	return out, err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// hostTable writes the hosts as an aligned table.
func hostTable(w io.Writer, hs []devctl.HostInfo) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tHOST ID\tPID\tPROCESS\tSTATE\tREPLICAS\tREGION\tRAFT ADDRESS\tAPI ADDRESS")
	for _, h := range hs {
		pid := "-"
		if h.PID != 0 {
			pid = fmt.Sprint(h.PID)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", h.N, dash(short(h.HostID)), pid, h.Process, dash(h.State), h.Replicas, h.Region, h.RaftAddress, h.APIAddress)
	}
	tw.Flush()
}

func (p *Playground) status(ctx context.Context) devctl.Response {
	hs, err := p.Hosts(ctx)
	var b strings.Builder
	hostTable(&b, hs)
	if err != nil {
		fmt.Fprintf(&b, "\n(The drummer leader did not answer, so HOST ID, STATE and REPLICAS are missing: %v.)\n", err)
	}
	return devctl.Response{Output: b.String(), Hosts: hs}
}

// PrintIntro prints what a newcomer needs after start-up: the hosts, the
// liveness timeouts, the shards, the endpoints and the tour.
func (p *Playground) PrintIntro(ctx context.Context, w io.Writer) {
	hs, err := p.Hosts(ctx)
	fmt.Fprintf(w, "\nDrummer dev is up: 3 drummer servers in this process (pid %d), %d nodehosts as child processes.\n\n", os.Getpid(), len(hs))
	hostTable(w, hs)
	if err != nil {
		fmt.Fprintf(w, "(hosts: %v)\n", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if cfg, err := p.d.GetConfig(cctx, &drummerpb.GetConfigRequest{}); err == nil {
		fmt.Fprintf(w, "\nLiveness: a host silent for %s is suspect (nothing new goes there), for %s dead: its replicas\n", ms(cfg.SuspectTimeoutMs), ms(cfg.DeadTimeoutMs))
		fmt.Fprintf(w, "are then re-created on other hosts. ('drummercmd config show'; 'config set dead_timeout=20s' changes it.)\n")
	}
	if ls, err := client.ListAllShards(cctx, p.d, &drummerpb.ListShardsRequest{}); err == nil {
		shardSummary(w, ls)
	}
	fmt.Fprintln(w)
	p.PrintEndpoints(w)
	p.printTour(w)
}

// shardSummary prints a small deployment's shards as a table, a large
// one's as counts by health.
func shardSummary(w io.Writer, ss []*drummerpb.ShardStatus) {
	if len(ss) > 12 {
		count := map[string]int{}
		for _, s := range ss {
			count[s.Health]++
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(count)) {
			parts = append(parts, fmt.Sprintf("%d %s", count[k], k))
		}
		fmt.Fprintf(w, "\nShards: %d (%s).\n", len(ss), strings.Join(parts, ", "))
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tAPP\tHEALTH\tLEADER\tMEMBERS")
	for _, s := range ss {
		var ms []string
		for _, m := range s.Members {
			ms = append(ms, fmt.Sprintf("%d@%s", m.ReplicaId, m.RaftAddress))
		}
		slices.Sort(ms)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", s.ShardId, s.App, s.Health, s.LeaderReplicaId, strings.Join(ms, " "))
	}
	tw.Flush()
}

// Env is the environment that points drummercmd at this deployment
// (with the admin certificate, or DRUMMER_INSECURE).
func (p *Playground) Env() string {
	env := "DRUMMER_ENDPOINTS=" + strings.Join(p.drummerEndpoints(), ",")
	t := p.TLS("admin")
	if t.Insecure {
		return env + " DRUMMER_INSECURE=true"
	}
	return env + " DRUMMER_CA_FILE=" + t.CAFile + " DRUMMER_CERT_FILE=" + t.CertFile + " DRUMMER_KEY_FILE=" + t.KeyFile
}

// PrintEndpoints prints where everything is: the one place that lists
// the playground's endpoints and the environment to use them.
func (p *Playground) PrintEndpoints(w io.Writer) {
	var apis []string
	for _, h := range p.snapshotHosts() {
		apis = append(apis, h.api)
	}
	fmt.Fprintf(w, "Drummer endpoints: %s\n", strings.Join(p.drummerEndpoints(), ","))
	fmt.Fprintf(w, "Nodehost APIs:     %s\n", strings.Join(apis, ","))
	if p.opts.Insecure {
		fmt.Fprintf(w, "Security:          none (--insecure): plaintext, every caller may do everything\n")
	} else {
		fmt.Fprintf(w, "Certificates:      %s   (mutual TLS on every listener; admin, operator, viewer and app\n", p.certs)
		fmt.Fprintf(w, "                   client certificates: use --cert-file %s --key-file %s for a viewer)\n",
			filepath.Join(p.certs, "viewer.crt"), filepath.Join(p.certs, "viewer.key"))
		if tok, err := p.webToken(); err == nil {
			fmt.Fprintf(w, "Web token:         %s\n", tok)
			fmt.Fprintf(w, "                   (viewer, 24h: open https://HOST:PORT/...?token=<token> in a browser)\n")
		}
	}
	fmt.Fprintf(w, "Environment:       export %s\n", p.Env())
	keep := ""
	if p.tmp {
		keep = "   (removed on exit; --data-dir DIR keeps it)"
	}
	fmt.Fprintf(w, "Data directory:    %s%s\n", p.DataDir, keep)
	fmt.Fprintf(w, "Nodehost logs:     %s\n", filepath.Join(p.DataDir, "nodehost-N.log"))
	fmt.Fprintf(w, "Control socket:    %s   (found through %s)\n", p.ctl.Path, p.pointer)
}

func (p *Playground) printTour(w io.Writer) {
	c := p.opts.Commands
	where := "in another terminal"
	if c.GoRun {
		where = "in another terminal, from the repository's root"
	}
	fmt.Fprintf(w, "\nTry it, %s:\n", where)
	fmt.Fprintf(w, "  export %s\n", p.Env())
	fmt.Fprintf(w, "  1. kill a host:        %s\n", p.devCmd("kill 2"))
	fmt.Fprintf(w, "  2. watch it heal:      %s shard list     (again every few seconds: under_replicated, then healthy)\n", c.Drummercmd)
	fmt.Fprintf(w, "                         %s wait --healthy --timeout 2m\n", c.Drummercmd)
	fmt.Fprintf(w, "  3. bring it back:      %s\n", p.devCmd("restart 2"))
	fmt.Fprintf(w, "  More: pause, resume, wipe N, add, status ('%s dev --help'); data: '%s kv put --shard-id 1 k v'.\n", c.Drummer, c.Drummercmd)
}
