package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/detect/eval"
	"github.com/scalpel-dev/scalpel/detect/single"
)

func init() { register(newDetectCmd) }

func newDetectCmd() *cobra.Command {
	var in, out string
	cmd := &cobra.Command{
		Use:   "detect --csv FILE [--out out.csv]",
		Short: "Stream a timestamp,value CSV through the single-series detector",
		Long: `Reads a timestamp,value CSV ("-" for stdin) in constant memory, runs every point through the
single-series detector with its default config, and writes timestamp,value,anomaly_score,alarm.
--out names the output file (stdout by default).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in == "" {
				return errors.New("--csv FILE is required (\"-\" reads stdin)")
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
			if err := detectCSV(r, bw); err != nil {
				return err
			}
			return bw.Flush()
		},
	}
	cmd.Flags().StringVar(&in, "csv", "", "timestamp,value CSV to score (\"-\" for stdin)")
	cmd.Flags().StringVar(&out, "out", "", "file to write the scored CSV to (default stdout)")
	return cmd
}

// detectCSV streams points from r through a default detector and writes one scored row per point.
func detectCSV(r io.Reader, w io.Writer) error {
	det := single.New(single.DefaultConfig())
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
