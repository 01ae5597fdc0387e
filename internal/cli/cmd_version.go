package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version is drummercmd's version, set at build time with
// -ldflags "-X github.com/drummerhq/drummer/internal/cli.Version=v1.2.3";
// when empty, the module version and VCS revision from the build info are
// shown.
var Version = ""

// APIVersion is the Drummer gRPC API drummercmd speaks.
const APIVersion = "drummer.v1"

func versionInfo() (version, commit string) {
	version = Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		if version == "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	if version == "" {
		version = "(devel)"
	}
	return version, commit
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print drummercmd's version (the server's is in 'drummercmd info')",
		Args:  args(cobra.NoArgs, "no arguments"),
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			v, commit := versionInfo()
			if a.jsonOutput() {
				return a.printJSON(struct {
					Version    string `json:"version"`
					Commit     string `json:"commit"`
					APIVersion string `json:"api_version"`
					GoVersion  string `json:"go_version"`
				}{v, commit, APIVersion, runtime.Version()})
			}
			kvs := [][2]string{{"drummercmd version", v}}
			if commit != "" {
				kvs = append(kvs, [2]string{"Commit", commit})
			}
			kvs = append(kvs, [2]string{"API version", APIVersion}, [2]string{"Go version", runtime.Version()})
			if err := writeKeyValues(a.stdout, kvs); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			return nil
		}),
	}
}
