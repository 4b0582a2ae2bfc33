package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func init() { register(newVersionCmd) }

// version is set at build time with -ldflags "-X main.version=v1.2.3"; otherwise the module's
// build information (version or VCS revision) is used.
var version = ""

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print scalpel's version and the versions of NATS libraries it was built with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := buildInfo()
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), v)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "scalpel %s (%s)\n", v.Version, v.GoVersion)
			for _, p := range []string{"github.com/nats-io/nats-server/v2", "github.com/nats-io/nats.go", "github.com/ThreeDotsLabs/watermill"} {
				if dv, ok := v.Deps[p]; ok {
					fmt.Fprintf(cmd.OutOrStdout(), "  %s %s\n", p, dv)
				}
			}
			return nil
		},
	}
}

// versionInfo is what `scalpel version` prints.
type versionInfo struct {
	Version   string            `json:"version"`
	GoVersion string            `json:"go_version"`
	Deps      map[string]string `json:"deps"`
}

// buildInfo is scalpel's version (-ldflags, else the module's version or VCS revision) and the
// versions of the NATS libraries it was built with.
func buildInfo() versionInfo {
	v := versionInfo{Version: version, GoVersion: runtime.Version(), Deps: map[string]string{}}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && (v.Version == "" || v.Version == "(devel)") {
				v.Version = "devel-" + s.Value
			}
		}
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/nats-io/nats-server/v2", "github.com/nats-io/nats.go", "github.com/ThreeDotsLabs/watermill":
				v.Deps[d.Path] = d.Version
			}
		}
	}
	if v.Version == "" {
		v.Version = "(devel)"
	}
	return v
}
