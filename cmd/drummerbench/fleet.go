package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/drummerhq/drummer/internal/fleet"
)

// errUsage marks a bad command line (exit 2).
var errUsage = errors.New("usage")

// fleetCmd runs the simulated fleet (internal/fleet) against three real
// drummer processes.
func fleetCmd(args []string) error {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	var c fleet.Config
	fs.IntVar(&c.Hosts, "hosts", 300, "simulated nodehosts")
	fs.IntVar(&c.ReplicasPerHost, "replicas-per-host", 100, "replicas per host: the run defines hosts*replicas/3 shards of 3 replicas")
	scen := fs.String("scenario", "steady", "comma-separated, run in order after the launch: "+strings.Join(fleet.Scenarios, ", "))
	fs.DurationVar(&c.SteadyFor, "duration", time.Minute, "length of the steady scenario")
	fs.IntVar(&c.Kill, "kill", 10, "hosts the kill scenario crashes")
	fs.IntVar(&c.Join, "join", 0, "empty hosts the join scenario starts (then waits until the replicas are balanced)")
	fs.DurationVar(&c.ReportInterval, "report-interval", 5*time.Second, "report_interval set on the drummers")
	fs.DurationVar(&c.SuspectTimeout, "suspect-timeout", 0, "suspect_timeout (default max(15s, 3 x report interval))")
	fs.DurationVar(&c.DeadTimeout, "dead-timeout", 0, "dead_timeout (default max(30s, 2 x suspect timeout))")
	settings := fs.String("config", "", "more runtime settings, key=value,... (as drummercmd config set)")
	fs.DurationVar(&c.ElectionDelay, "election-delay", time.Second, "simulated Raft election time of a shard")
	fs.BoolVar(&c.Insecure, "insecure", false, "run the drummers with --insecure (no per-host certificates)")
	fs.IntVar(&c.HostsPerConn, "hosts-per-conn", 1, "hosts sharing one connection to each server (needs --insecure; for open-file limits below 3 per host)")
	fs.StringVar(&c.Dir, "dir", "", "work directory (default: a temporary one, removed at the end)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the work directory (drummer logs and data)")
	fs.StringVar(&c.DrummerBinary, "drummer-binary", "", "a built cmd/drummer (default: built into the work directory)")
	fs.DurationVar(&c.PollEvery, "poll", time.Second, "how often the bench polls cluster info and non-up hosts")
	fs.DurationVar(&c.PhaseTimeout, "phase-timeout", 15*time.Minute, "bound on every wait")
	drummerArgs := fs.String("drummer-args", "", "extra flags for every drummer server, space-separated (e.g. \"--log-level info\")")
	restart := fs.Bool("restart-killed-drummer", true, "restart the killed leader after leader-kill")
	out := fs.String("o", "table", "output: table (Markdown) or json")
	from := fs.String("table-from", "", "print the table of a saved -o json result and exit")
	gcPercent := fs.Int("bench-gogc", 400, "GOGC of the bench process (the simulated hosts, not the drummers): more memory, less CPU taken from the drummers; GOGC in the environment wins")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the bench itself (the simulated hosts) to this file")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *from != "" {
		b, err := os.ReadFile(*from)
		if err != nil {
			return err
		}
		var res fleet.Result
		if err := json.Unmarshal(b, &res); err != nil {
			return fmt.Errorf("%s: %w", *from, err)
		}
		return res.WriteTable(os.Stdout)
	}
	if _, set := os.LookupEnv("GOGC"); !set && *gcPercent != 0 {
		// The bench shares the machine with the drummers it measures: at
		// 10,000 hosts the default GOGC spent a quarter of its CPU in GC.
		debug.SetGCPercent(*gcPercent)
	}
	c.RestartKilledDrummer = *restart
	c.DrummerArgs = strings.Fields(*drummerArgs)
	for _, s := range strings.Split(*scen, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.Scenarios = append(c.Scenarios, s)
		}
	}
	if *settings != "" {
		c.Settings = map[string]string{}
		for _, kv := range strings.Split(*settings, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				fmt.Fprintf(os.Stderr, "drummerbench fleet: --config %q: want key=value,...\n", kv)
				return errUsage
			}
			c.Settings[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if *out != "table" && *out != "json" {
		fmt.Fprintf(os.Stderr, "drummerbench fleet: -o %q: want table or json\n", *out)
		return errUsage
	}
	check := c
	check.Logf = nil
	if err := validate(check); err != nil {
		fmt.Fprintln(os.Stderr, "drummerbench fleet:", err)
		return errUsage
	}
	c.Logf = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res, err := fleet.Run(ctx, c)
	if res != nil {
		res.Command = "drummerbench fleet " + strings.Join(args, " ")
		var werr error
		if *out == "json" {
			werr = res.WriteJSON(os.Stdout)
		} else {
			werr = res.WriteTable(os.Stdout)
		}
		if err == nil {
			err = werr
		}
	}
	return err
}

// validate applies Run's defaults to a copy and checks it.
func validate(c fleet.Config) error {
	c.Defaults()
	return c.Validate()
}
