package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/scalpel-dev/scalpel/detect/eval"
	"github.com/scalpel-dev/scalpel/detect/single"
)

func init() { register(newDetectCmd) }

func newDetectCmd() *cobra.Command {
	var in, out, cfgFile string
	cmd := &cobra.Command{
		Use:   "detect --csv FILE [--out out.csv] [--config detector.yaml]",
		Short: "Stream a timestamp,value CSV through the single-series detector",
		Long: `Reads a timestamp,value CSV ("-" for stdin) in constant memory, runs every point through the
single-series detector, and writes timestamp,value,anomaly_score,alarm. --out names the output
file (stdout by default). --config overrides the detector's frozen defaults from a YAML or JSON file
of its fields (rest, season_hours, alarm_threshold, …; see detect/single.Config); unknown fields
are an error.`,
		Example: `  scalpel detect --csv ../shared/data/nab/data/realKnownCause/nyc_taxi.csv --out scored.csv
  printf 'season_hours: 0\n' > noseason.yaml
  scalpel detect --csv series.csv --config noseason.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in == "" {
				return errors.New("--csv FILE is required (\"-\" reads stdin)")
			}
			cfg, err := loadSingleConfig(cfgFile)
			if err != nil {
				return err
			}
			var r io.Reader = cmd.InOrStdin()
			if in != "-" {
				f, err := os.Open(in)
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			var w io.Writer = cmd.OutOrStdout()
			if out != "" && out != "-" {
				f, err := os.Create(out)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			bw := bufio.NewWriter(w)
			if err := detectCSV(r, bw, cfg); err != nil {
				return err
			}
			return bw.Flush()
		},
	}
	cmd.Flags().StringVar(&in, "csv", "", "timestamp,value CSV to score (\"-\" for stdin)")
	cmd.Flags().StringVar(&out, "out", "", "file to write the scored CSV to (default stdout)")
	cmd.Flags().StringVar(&cfgFile, "config", "", "YAML or JSON file overriding the detector's defaults")
	return cmd
}

// loadSingleConfig reads the single-series detector's config from path over the defaults (the
// defaults alone when path is empty) and validates it.
func loadSingleConfig(path string) (single.Config, error) {
	cfg := single.DefaultConfig()
	if path == "" {
		return cfg, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return cfg, fmt.Errorf("detector config: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("detector config %s: %w (fields are those of detect/single.Config, e.g. rest: 400)", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("detector config %s: %w", path, err)
	}
	return cfg, nil
}

// detectCSV streams points from r through a detector with cfg and writes one scored row per point.
func detectCSV(r io.Reader, w io.Writer, cfg single.Config) error {
	det := single.New(cfg)
	sr := eval.NewSeriesReader(r)
	if _, err := io.WriteString(w, "timestamp,value,anomaly_score,alarm\n"); err != nil {
		return err
	}
	var buf []byte
	for {
		p, err := sr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		score, alarm := det.Step(p.T, p.V)
		buf = buf[:0]
		buf = p.T.AppendFormat(buf, "2006-01-02 15:04:05")
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, p.V, 'g', -1, 64)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, score, 'f', 6, 64)
		buf = append(buf, ',')
		buf = strconv.AppendBool(buf, alarm)
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
}
