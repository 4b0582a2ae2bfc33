package pipeline

import (
	"log/slog"

	"github.com/scalpel-dev/scalpel/decide"
	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/internal/config"
)

// NewDetector builds the detector the way the live pipeline does. Replay builds its detector here so
// that a re-run with the same config makes the same anomalies: an option added to the live detector
// (a block resolver, say) must be added here too, and New should call this.
func NewDetector(cfg config.Config, log *slog.Logger) *detect.Detector {
	return detect.New(cfg.Detect, detectorOptions(log)...)
}

// RestoreDetector is NewDetector from a checkpoint's bytes (detect.Restore).
func RestoreDetector(cfg config.Config, snap []byte, log *slog.Logger) (*detect.Detector, error) {
	return detect.Restore(cfg.Detect, snap, detectorOptions(log)...)
}

// detectorOptions are the options of the live detector, whether new or restored from a
// checkpoint.
func detectorOptions(log *slog.Logger) []detect.Option {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return []detect.Option{detect.WithLogger(log)} // detect names its stage itself
}

// NewEngine builds the decision engine the way the live pipeline does, over any catalog: the KV
// catalog live, a static one in a replay.
func NewEngine(cfg config.Config, cat decide.CatalogReader, log *slog.Logger) *decide.Engine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return decide.New(cfg.Decide, cat, decide.WithLogger(log.With("stage", "decide")))
}
