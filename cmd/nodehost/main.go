// Command nodehost runs a dragonboat NodeHost managed by Drummer: it
// reports to the drummer servers, runs the shards they assign (the built-in
// "kv" app), and serves the NodehostAPI data plane.
//
// To run your own state machines, build your own binary with the agent
// package (see its documentation); this command is a thin wrapper around it
// (the flags and the run live in internal/nodehostcmd, shared with the
// nodehosts `drummer dev` starts).
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/internal/nodehostcmd"
)

var version = "dev"

// testHooks, when a build-tagged file sets it (chaos tests build the
// nodehost with -tags dragonboat_monkeytest), adds test-only flags and
// returns a function that adjusts the agent configuration before start.
var testHooks nodehostcmd.Hooks

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	cmd := nodehostcmd.Command(nodehostcmd.Options{Version: version, Hooks: testHooks, Stderr: stderr})
	cmd.AddCommand(&cobra.Command{
		Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		Run: func(*cobra.Command, []string) { fmt.Fprintln(stdout, "nodehost", version) },
	})
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "nodehost:", err)
	if nodehostcmd.IsUsage(err) {
		fmt.Fprintln(stderr, "Run 'nodehost --help' for usage.")
		return 2
	}
	return 1
}
