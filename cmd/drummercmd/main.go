// Command drummercmd is the operator CLI of Drummer; see docs/cli.md or
// `drummercmd --help`. All of it lives in internal/cli.
package main

import (
	"os"

	"github.com/drummerhq/drummer/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}
