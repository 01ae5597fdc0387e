package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Phase is the duration of one phase of a run.
type Phase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration"`
}

// Report is the outcome of a chaos run.
type Report struct {
	Seed          uint64 `json:"seed"`
	ReplayCommand string `json:"replay_command"`
	Dir           string `json:"dir"`
	DirRemoved    bool   `json:"dir_removed"`
	Config        string `json:"config"`

	Phases   []Phase        `json:"phases"`
	Total    time.Duration  `json:"total"`
	Faults   map[string]int `json:"faults"`
	FaultLog []FaultEvent   `json:"fault_log"`

	Ops             map[string]int        `json:"ops"` // by kind/outcome
	OpsOK           int                   `json:"ops_ok"`
	OpsUnknown      int                   `json:"ops_unknown"`
	OpsFailed       int                   `json:"ops_failed"`
	SessionsFailed  int                   `json:"sessions_failed"`
	Linearizability LinearizabilityResult `json:"linearizability"`

	Repairs          RepairStats   `json:"repairs"`
	TimeToHealthy    time.Duration `json:"time_to_healthy"`
	TimeToConsistent time.Duration `json:"time_to_consistent"`
	ReplicasChecked  int           `json:"replicas_checked"`
	DBAppliedIndex   uint64        `json:"db_applied_index"`

	Failures    []string `json:"failures"`
	Interrupted bool     `json:"interrupted"`
}

func newReport(cfg *Config) *Report {
	return &Report{
		Seed: cfg.Seed, ReplayCommand: cfg.ReplayCommand(), Dir: cfg.Dir,
		Config: fmt.Sprintf("%d nodehosts, %d shards x 3 replicas, %d workers, %s of faults (%s), max %d nodehosts impaired, suspect/dead timeouts %s/%s%s",
			cfg.Nodehosts, cfg.Shards, cfg.Workers, cfg.Duration, strings.Join(cfg.Faults, ","), cfg.MaxImpaired,
			cfg.SuspectTimeout, cfg.DeadTimeout,
			map[bool]string{true: ", UNSAFE ACK (broken build)"}[cfg.UnsafeAck]+map[bool]string{true: ", DIVERGING nodehost-1 (broken build)"}[cfg.Diverge]),
		Faults: map[string]int{}, Ops: map[string]int{},
	}
}

func (r *Report) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool { return len(r.Failures) > 0 }

func (r *Report) setWorkload(s *workloadStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.OpsOK, r.OpsUnknown, r.OpsFailed, r.SessionsFailed = s.ok, s.unknown, s.failed, s.sessionsFailed
	maps.Copy(r.Ops, s.byKind)
}

// Summary is a human-readable summary of the run.
func (r *Report) Summary() string {
	var b strings.Builder
	verdict := "PASS"
	if r.Failed() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "drummer chaos run: %s (seed %d, %s)\n", verdict, r.Seed, r.Total.Round(time.Second))
	fmt.Fprintf(&b, "  config: %s\n", r.Config)
	fmt.Fprintf(&b, "  replay: %s\n", r.ReplayCommand)
	var ph []string
	for _, p := range r.Phases {
		ph = append(ph, fmt.Sprintf("%s %s", p.Name, p.Duration.Round(100*time.Millisecond)))
	}
	fmt.Fprintf(&b, "  phases: %s\n", strings.Join(ph, ", "))
	total := 0
	var fk []string
	for _, k := range slices.Sorted(maps.Keys(r.Faults)) {
		total += r.Faults[k]
		fk = append(fk, fmt.Sprintf("%s %d", k, r.Faults[k]))
	}
	fmt.Fprintf(&b, "  faults injected: %d (%s)\n", total, strings.Join(fk, ", "))
	fmt.Fprintf(&b, "  operations: %d ok, %d unknown outcome, %d failed (not checked); %d session opens failed\n",
		r.OpsOK, r.OpsUnknown, r.OpsFailed, r.SessionsFailed)
	var ok []string
	for _, k := range slices.Sorted(maps.Keys(r.Ops)) {
		ok = append(ok, fmt.Sprintf("%s %d", k, r.Ops[k]))
	}
	fmt.Fprintf(&b, "    by kind: %s\n", strings.Join(ok, ", "))
	fmt.Fprintf(&b, "  linearizability: %s\n", r.Linearizability)
	var rk []string
	for _, k := range slices.Sorted(maps.Keys(r.Repairs.ByKind)) {
		rk = append(rk, fmt.Sprintf("%s %d", k, r.Repairs.ByKind[k]))
	}
	var ro []string
	for _, k := range slices.Sorted(maps.Keys(r.Repairs.ByOutcome)) {
		ro = append(ro, fmt.Sprintf("%s %d", k, r.Repairs.ByOutcome[k]))
	}
	fmt.Fprintf(&b, "  repairs: %d (%s; %s)\n", r.Repairs.Total, strings.Join(rk, ", "), strings.Join(ro, ", "))
	switch {
	case r.TimeToConsistent > 0:
		fmt.Fprintf(&b, "  converged: control plane healthy %s after healing, replicas and drummer DB consistent after %s (%d replicas, DB index %d)\n",
			r.TimeToHealthy.Round(100*time.Millisecond), r.TimeToConsistent.Round(100*time.Millisecond), r.ReplicasChecked, r.DBAppliedIndex)
	case r.TimeToHealthy > 0:
		fmt.Fprintf(&b, "  converged: control plane healthy %s after healing; replicas/drummer DB NOT consistent\n", r.TimeToHealthy.Round(100*time.Millisecond))
	default:
		fmt.Fprintf(&b, "  converged: NO\n")
	}
	if r.Failed() {
		fmt.Fprintf(&b, "  FAILURES:\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "    - %s\n", f)
		}
		for _, v := range r.Linearizability.Visualizations {
			fmt.Fprintf(&b, "  porcupine visualization: %s\n", v)
		}
		if ex := r.Linearizability.Example; ex != "" {
			lines := strings.Split(strings.TrimRight(ex, "\n"), "\n")
			if len(lines) > 25 {
				lines = append(lines[:25], fmt.Sprintf("  ... (%d more)", len(lines)-25))
			}
			fmt.Fprintf(&b, "  shortest non-linearizable history:\n    %s\n", strings.Join(lines, "\n    "))
		}
	}
	if r.DirRemoved {
		fmt.Fprintf(&b, "  data and logs: removed (passing run)\n")
	} else {
		fmt.Fprintf(&b, "  data and logs: %s (summary.txt, report.json, history.jsonl, final-state.json, *.log)\n", r.Dir)
	}
	return b.String()
}

func (r *Report) writeFiles() error {
	if r.Dir == "" {
		return nil
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "summary.txt"), []byte(r.Summary()), 0o644); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.Dir, "report.json"), b, 0o644)
}

func writeHistory(path string, ops []Op) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for i := range ops {
		_ = enc.Encode(&ops[i])
	}
	_ = w.Flush()
}
