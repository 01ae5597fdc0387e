package fleet

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// Result is what a run measured. Times are in seconds, latencies in
// milliseconds (as the simulated agents measured each Report call), CPU in
// cores (1.0 = one core busy on average) and memory in MiB.
type Result struct {
	Date            string   `json:"date"`
	Command         string   `json:"command,omitempty"`
	Machine         string   `json:"machine"`
	Hosts           int      `json:"hosts"`
	ReplicasPerHost int      `json:"replicas_per_host"`
	ShardReplicas   int      `json:"shard_replicas"`
	Shards          int      `json:"shards"`
	ReportInterval  string   `json:"report_interval"`
	SuspectTimeout  string   `json:"suspect_timeout"`
	DeadTimeout     string   `json:"dead_timeout"`
	TLS             bool     `json:"tls"`
	HostsPerConn    int      `json:"hosts_per_conn,omitempty"`
	Scenarios       []string `json:"scenarios"`
	Dir             string   `json:"dir,omitempty"`

	CertSeconds            float64 `json:"cert_seconds"`
	RegisterSeconds        float64 `json:"register_seconds"`
	LaunchToHealthySeconds float64 `json:"launch_to_healthy_seconds"`

	Phases      []*Phase            `json:"phases"`
	Kills       []*KillResult       `json:"kills,omitempty"`
	LeaderKills []*LeaderKillResult `json:"leader_kills,omitempty"`
	Joins       []*JoinResult       `json:"joins,omitempty"`

	// Report errors over the whole run, by "endpoint code", and the first
	// message of each.
	ErrorsByServer map[string]int64  `json:"errors_by_server,omitempty"`
	ErrorSamples   map[string]string `json:"error_samples,omitempty"`
	// Safety violations the model saw (data loss, quorum lost by a
	// change, inconsistent bootstraps): always 0 for a correct scheduler.
	ViolationCount int      `json:"violation_count"`
	Violations     []string `json:"violations,omitempty"`
	ModelShards    int      `json:"model_shards"`

	extraShards int
}

// Phase is one measured stretch of the run.
type Phase struct {
	Name        string  `json:"name"`
	Seconds     float64 `json:"seconds"`
	Reports     int64   `json:"reports"`
	FullReports int64   `json:"full_reports"`
	Errors      int64   `json:"errors"`
	// ErrorsToLive leaves out the errors of reports to a server that was
	// down at the end of the phase (the killed leader).
	ErrorsToLive int64   `json:"errors_to_live_servers"`
	Orders       int64   `json:"orders"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	// HostsNotUp are the hosts seen suspect or dead during the phase,
	// except those the run killed.
	HostsNotUp []string      `json:"hosts_not_up"`
	Servers    []ServerPhase `json:"servers"`
	// Error says why the phase did not complete.
	Error string `json:"error,omitempty"`
}

// ServerPhase is one drummer server during a phase.
type ServerPhase struct {
	ID        uint64  `json:"id"`
	Endpoint  string  `json:"endpoint"`
	Role      string  `json:"role"`
	CPUCores  float64 `json:"cpu_cores"`
	RSSMiB    float64 `json:"rss_mib"`
	MaxRSSMiB float64 `json:"max_rss_mib"`
	Reports   int64   `json:"reports"`
	Errors    int64   `json:"errors"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
}

// KillResult is one kill scenario.
type KillResult struct {
	Hosts    int `json:"hosts"`
	Replicas int `json:"replicas"`
	// Unrepairable shards lost a quorum of voters with the hosts.
	Unrepairable         int     `json:"unrepairable"`
	KillToDeadSeconds    float64 `json:"kill_to_dead_seconds"`
	DeadToHealthySeconds float64 `json:"dead_to_healthy_seconds"`
	KillToHealthySeconds float64 `json:"kill_to_healthy_seconds"`
}

// LeaderKillResult is one leader-kill scenario.
type LeaderKillResult struct {
	OldLeader            uint64  `json:"old_leader"`
	NewLeader            uint64  `json:"new_leader"`
	KillToCreatedSeconds float64 `json:"kill_to_created_seconds"`
	KillToPlacedSeconds  float64 `json:"kill_to_placed_seconds"`
	KillToHealthySeconds float64 `json:"kill_to_healthy_seconds"`
	// HostsNotUp counts hosts seen suspect or dead from the kill until
	// Settle after the new shard was healthy.
	HostsNotUp int `json:"hosts_not_up"`
}

func (p *Phase) line() string {
	var srv []string
	for _, s := range p.Servers {
		srv = append(srv, fmt.Sprintf("drummer-%d %s %.2f cores %.0f MiB", s.ID, s.Role, s.CPUCores, s.MaxRSSMiB))
	}
	return fmt.Sprintf("%s: %.1fs, %d reports (%d errors), p50 %.1fms p99 %.1fms max %.1fms, %d hosts not up; %s",
		p.Name, p.Seconds, p.Reports, p.Errors, p.P50Ms, p.P99Ms, p.MaxMs, len(p.HostsNotUp), strings.Join(srv, ", "))
}

// WriteJSON writes the result as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteTable writes the result as Markdown tables.
func (r *Result) WriteTable(w io.Writer) error {
	tls := "mutual TLS, one nodehost certificate per host"
	if !r.TLS {
		tls = "--insecure"
		if r.HostsPerConn > 1 {
			tls += fmt.Sprintf(", %d hosts per connection", r.HostsPerConn)
		}
	}
	fmt.Fprintf(w, "<!-- %s; %s -->\n", r.Date, r.Machine)
	fmt.Fprintf(w, "%d hosts x %d replicas = %d shards of %d; report_interval %s, suspect %s, dead %s; %s\n\n",
		r.Hosts, r.ReplicasPerHost, r.Shards, r.ShardReplicas, r.ReportInterval, r.SuspectTimeout, r.DeadTimeout, tls)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "| phase\t| s\t| reports\t| errors (to live servers)\t| p50 ms\t| p99 ms\t| max ms\t| hosts not up\t| orders\t| drummer CPU (cores) / max RSS (MiB)\t|")
	fmt.Fprintln(tw, "|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|")
	for _, p := range r.Phases {
		var srv []string
		for _, s := range p.Servers {
			srv = append(srv, fmt.Sprintf("%d %s %.2f / %.0f", s.ID, s.Role, s.CPUCores, s.MaxRSSMiB))
		}
		fmt.Fprintf(tw, "| %s\t| %.1f\t| %d\t| %d (%d)\t| %.1f\t| %.1f\t| %.1f\t| %d\t| %d\t| %s\t|\n",
			p.Name, p.Seconds, p.Reports, p.Errors, p.ErrorsToLive, p.P50Ms, p.P99Ms, p.MaxMs, len(p.HostsNotUp), p.Orders, strings.Join(srv, "; "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n| measure | value |\n|---|---|\n")
	fmt.Fprintf(w, "| hosts registered after start | %.1f s |\n", r.RegisterSeconds)
	if r.LaunchToHealthySeconds > 0 {
		fmt.Fprintf(w, "| define + launch to all healthy | %.1f s |\n", r.LaunchToHealthySeconds)
	} else {
		fmt.Fprintf(w, "| define + launch to all healthy | not reached |\n")
	}
	for _, k := range r.Kills {
		fmt.Fprintf(w, "| kill %d hosts (%d replicas, %d shards without quorum): to dead verdict | %.1f s |\n", k.Hosts, k.Replicas, k.Unrepairable, k.KillToDeadSeconds)
		fmt.Fprintf(w, "| dead verdict to every repairable shard healthy | %.1f s |\n", k.DeadToHealthySeconds)
	}
	for _, l := range r.LeaderKills {
		fmt.Fprintf(w, "| SIGKILL leader drummer-%d: a new shard created | %.2f s |\n", l.OldLeader, l.KillToCreatedSeconds)
		fmt.Fprintf(w, "| ... placed | %.2f s |\n", l.KillToPlacedSeconds)
		fmt.Fprintf(w, "| ... healthy | %.2f s |\n", l.KillToHealthySeconds)
		fmt.Fprintf(w, "| hosts suspect or dead around the failover | %d |\n", l.HostsNotUp)
	}
	for _, j := range r.Joins {
		fmt.Fprintf(w, "| join %d empty hosts: all up | %.1f s |\n", j.Hosts, j.UpSeconds)
		if j.BalancedSeconds > 0 {
			fmt.Fprintf(w, "| ... replicas balanced (every host within %.1f of the fair share %.1f) | %.1f s |\n", j.Tolerance, j.Share, j.BalancedSeconds)
		} else {
			fmt.Fprintf(w, "| ... replicas balanced | not reached |\n")
		}
		fmt.Fprintf(w, "| ... replicas moved to the new hosts (minimum to balance: %d) | %d (%.1f per second) |\n", j.MinMoves, j.Moved, j.MovesPerSecond)
	}
	fmt.Fprintf(w, "| safety violations seen by the model | %d |\n", r.ViolationCount)
	for _, k := range slices.Sorted(maps.Keys(r.ErrorsByServer)) {
		fmt.Fprintf(w, "| report errors %s | %d (%s) |\n", k, r.ErrorsByServer[k], trim(r.ErrorSamples[k], 100))
	}
	for _, p := range r.Phases {
		if p.Error != "" {
			fmt.Fprintf(w, "\nPhase %s did not complete: %s\n", p.Name, p.Error)
		}
	}
	for _, v := range r.Violations {
		fmt.Fprintf(w, "\nVIOLATION: %s\n", v)
	}
	return nil
}

func trim(s string, n int) string {
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func (m *model) violationList() ([]string, int) {
	m.violMu.Lock()
	defer m.violMu.Unlock()
	return slices.Clone(m.violations), m.violCount
}

func (f *Fleet) errorList() (map[string]int64, map[string]string) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return maps.Clone(f.errCodes), maps.Clone(f.errFirst)
}

// merge adds o's counts to h (o is not being written).
func (h *histogram) merge(o *histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.max.Store(max(h.max.Load(), o.max.Load()))
}
