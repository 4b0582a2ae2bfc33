package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/detect/eval"
	"github.com/scalpel-dev/scalpel/detect/single"
)

func init() { register(newEvalCmd) }

// evalSubcommands registers the benchmarks under `scalpel eval`; each benchmark's file adds itself
// in init, as top-level commands do with register.
var evalSubcommands []func() *cobra.Command

func newEvalCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Score the detectors on labelled benchmarks",
	}
	for _, f := range append([]func() *cobra.Command{newEvalNABCmd}, evalSubcommands...) {
		cmd.AddCommand(f())
	}
	return cmd
}

// defaultNABDir is where the NAB corpus sits next to a checkout.
const defaultNABDir = "../shared/data/nab"

func newEvalNABCmd() *cobra.Command {
	var dataDir, labels, results, cfgFile string
	cmd := &cobra.Command{
		Use:   "nab",
		Short: "Score the single-series detector on a NAB corpus, next to the published detectors",
		Long: `Streams every file under --data through the single-series detector with its default config,
optimises one threshold per NAB profile over those files (as NAB does), and prints the standard,
low-FP and low-FN scores per category and in total, next to the published detectors' results on the
same files. --data is a NAB root (with data/, labels/, results/) or a directory of <category>/*.csv.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			root := dataDir
			if root == "" {
				if _, err := os.Stat(defaultNABDir); err != nil {
					return fmt.Errorf("no --data given and %s does not exist: point --data at a NAB corpus", defaultNABDir)
				}
				root = defaultNABDir
			}
			files := root
			if st, err := os.Stat(filepath.Join(root, "data")); err == nil && st.IsDir() {
				files = filepath.Join(root, "data")
			}
			if labels == "" {
				labels = filepath.Join(root, "labels", "combined_windows.json")
			}
			if results == "" {
				if st, err := os.Stat(filepath.Join(root, "results")); err == nil && st.IsDir() {
					results = filepath.Join(root, "results")
				}
			}
			profiles := eval.DefaultProfiles()
			if p, err := eval.LoadProfiles(filepath.Join(root, "config", "profiles.json")); err == nil {
				profiles = p
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			corpus, err := eval.LoadCorpus(files, labels)
			if err != nil {
				return err
			}
			cfg, err := loadSingleConfig(cfgFile)
			if err != nil {
				return err
			}
			stderr := cmd.ErrOrStderr()
			fmt.Fprintf(stderr, "scoring %d files under %s\n", len(corpus), files)
			rep, err := eval.RunNAB(cmd.Context(), corpus, eval.NABOptions{
				Name:     "scalpel",
				New:      func() eval.Stepper { return single.New(cfg) },
				Profiles: profiles,
				Results:  results,
				Progress: func(done, total int, file string, took time.Duration) {
					fmt.Fprintf(stderr, "[%2d/%d] %s (%s)\n", done, total, file, took.Round(time.Millisecond))
				},
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, struct {
					Config single.Config `json:"config"`
					*eval.Report
				}{cfg, rep})
			}
			return rep.WriteTable(out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data", "", "NAB root or data directory (default "+defaultNABDir+" when it exists)")
	f.StringVar(&labels, "labels", "", "combined_windows.json (default <data>/labels/combined_windows.json)")
	f.StringVar(&results, "results", "", "published results directory to compare with (default <data>/results)")
	f.StringVar(&cfgFile, "config", "", "YAML or JSON file overriding the single-series detector's frozen defaults (to study a parameter; the defaults are what is reported)")
	return cmd
}
