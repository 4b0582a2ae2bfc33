package decide

import (
	"errors"
	"fmt"
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// Config configures the decision engine. Every field has a working default (DefaultConfig); a
// manifest's own settings (rollback_window, dry_run, granularity) take precedence for its service.
type Config struct {
	// DefaultRollbackWindow is how long after a deploy an anomaly may roll the change back without a
	// person approving it, for services whose manifest sets no rollback_window. After it, decisions
	// are `recommend`. Default 15m.
	DefaultRollbackWindow schemas.Duration `json:"default_rollback_window" yaml:"default_rollback_window"`

	// DryRun marks every decision as a dry run: recorded and published on decision.<svc>, never
	// actuated. A manifest's dry_run: true does the same for one service. Default false.
	DryRun bool `json:"dry_run" yaml:"dry_run"`

	// DefaultGranularity applies to a component that telemetry reports but the service's manifest
	// does not list: fine, medium or coarse. Default medium (the component's previous version), the
	// smallest granularity that needs no block map.
	DefaultGranularity string `json:"default_granularity" yaml:"default_granularity"`

	// RollbackOnInvalidInput lets an error-rate anomaly of category invalid_input (client errors) roll
	// back. Default false: a burst of bad requests is not a regression of the code, and rolling back
	// would not stop it.
	RollbackOnInvalidInput bool `json:"rollback_on_invalid_input" yaml:"rollback_on_invalid_input"`

	// RollbackOnSilence lets a unit that fell silent after a deploy (a throughput drop to not one
	// request, schemas.Anomaly.IsSilence) roll back inside the window. Default false: the decision
	// is a recommendation a person approves, since a hung version and lost telemetry look alike,
	// and an empty window is inconclusive.
	RollbackOnSilence bool `json:"rollback_on_silence" yaml:"rollback_on_silence"`

	// IncidentQuietPeriod closes an incident that received no anomaly for this long (event time); a
	// later anomaly of the same target and deploy opens a new incident with a new decision. Until
	// then further anomalies of the burst are attached to the incident quietly. Default 30m.
	IncidentQuietPeriod schemas.Duration `json:"incident_quiet_period" yaml:"incident_quiet_period"`

	// MaxDeploysPerService bounds the deploys remembered per service for attribution (the newest
	// are kept). Version history is kept separately and is not bounded by this. Default 32.
	MaxDeploysPerService int `json:"max_deploys_per_service" yaml:"max_deploys_per_service"`

	// VerifyPeriod is how long (event time) after a rollback step the incident's series are watched.
	// If its anomalies have not all resolved by then, or a new one fires on the same component from
	// traffic after the rollback, the ladder climbs one level (fine → medium → coarse). Default 5m.
	VerifyPeriod schemas.Duration `json:"verify_period" yaml:"verify_period"`

	// DeploySkew is how long after an anomaly's detection a deploy may be stamped and still be the
	// change behind it, when it set the component to the anomaly's version: deploys are often
	// announced as the rollout starts or ends, after the new version's first requests. Default 1m.
	//
	// Such a deploy may also reach decide after the anomaly. So a firing anomaly whose version no
	// recorded deploy set and no deploy ever announced, and that no incident of its target takes,
	// waits: the deploy that explains it decides it on arrival, exactly as if it had come first (a
	// rollback inside the window); with no such deploy, it is decided once the detector's watermark
	// passes its detection time + deploy_skew (usually hold or recommend). Either way the decision
	// carries the anomaly's detection time and the same id, whatever order deploys and anomalies
	// arrived in, so replays stay byte-identical. The cost: a regression of a version no deploy
	// announces is decided up to deploy_skew of event time later.
	DeploySkew schemas.Duration `json:"deploy_skew" yaml:"deploy_skew"`

	// VerifySettle is how long after a rollback step a new anomaly is still taken as news of the
	// traffic before it: requests in flight, buckets still open and the detector's allowed lateness
	// all carry pre-rollback evidence for a few seconds. An anomaly whose window starts within it does
	// not count as the problem persisting. Default 5s.
	VerifySettle schemas.Duration `json:"verify_settle" yaml:"verify_settle"`

	// GoodAfter is how long a version must have run without an incident to count as last known
	// good: the rollback target is the newest earlier version that qualifies, not blindly the
	// previous one. A version observed as a detector's healthy baseline qualifies at once. Default 10m.
	GoodAfter schemas.Duration `json:"good_after" yaml:"good_after"`

	// Cooldown holds a new incident's rollback of a component that was rolled back less than this
	// long ago (event time), so two incidents cannot flap it back and forth. Escalations of one
	// incident are not held. Default 10m.
	Cooldown schemas.Duration `json:"cooldown" yaml:"cooldown"`

	// RollbackBudget is how many rollbacks of one component are allowed within BudgetWindow; the next
	// one is held for a person. Default 3.
	RollbackBudget int `json:"rollback_budget" yaml:"rollback_budget"`

	// BudgetWindow is the period RollbackBudget counts over. Default 24h.
	BudgetWindow schemas.Duration `json:"budget_window" yaml:"budget_window"`

	// BlastRadius is how many unrelated components (not linked by dependencies, not changed by the
	// same deploy) degrading within BlastWindow make an outage rather than a bad change: the
	// decision holds. Default 4.
	BlastRadius int `json:"blast_radius" yaml:"blast_radius"`

	// BlastWindow is the event-time window the blast radius guard counts degraded components in.
	// Default 2m.
	BlastWindow schemas.Duration `json:"blast_window" yaml:"blast_window"`

	// GranularityWindows shortens the rollback window per granularity (keys fine, medium, coarse):
	// the window that applies is the shorter of the service's and this one, so e.g. a whole-app
	// rollback can be automatic for 5m only while a block may go back for the full 15m. Outside it
	// the decision is recommend. Default none.
	GranularityWindows map[string]schemas.Duration `json:"granularity_windows,omitempty" yaml:"granularity_windows,omitempty"`

	// ApprovalTimeout is how long a recommend decision waits for `scalpel approve` / `scalpel reject`
	// (event time); after it the recommendation expires with a `none` decision. Default 1h.
	ApprovalTimeout schemas.Duration `json:"approval_timeout" yaml:"approval_timeout"`

	// BlockMinShare is the share of an anomaly's errors above baseline that one block must hold for
	// the evidence to name it, so that a component tagged fine rolls back only that block. Errors
	// are counted per block against the block's own baseline; error sites in no block's line range
	// count as "unknown site". Below the share the errors are spread over several blocks (or over
	// code no block covers), rolling back one block would likely leave the fault running, and the
	// decision acts at the next coarser level (the component), saying how the errors spread. In
	// (0, 1]. Default 0.6.
	BlockMinShare float64 `json:"block_min_share" yaml:"block_min_share"`

	// BlockMinErrors is how many errors above baseline the block must hold as well: a handful of
	// errors is no evidence for one block over another, whatever its share. At least 1. Default 5.
	BlockMinErrors int `json:"block_min_errors" yaml:"block_min_errors"`

	// LeaseTTL is how long the active decider's lease in scalpel_state lasts without renewal (it
	// renews every third of it), and the active ingest consumer's lease on its durable too. It is
	// wall-clock process time, not event time: a standby takes over within about this long after
	// the active process dies, and at once when it stops cleanly.
	// Shorter means faster failover but more KV writes and a risk of flapping on a slow link.
	// Default 10s; at least 1s.
	LeaseTTL schemas.Duration `json:"lease_ttl" yaml:"lease_ttl"`
}

// DefaultConfig returns the configuration scalpel runs with when nothing is configured.
func DefaultConfig() Config {
	return Config{
		DefaultRollbackWindow: schemas.Duration(15 * time.Minute),
		DefaultGranularity:    schemas.GranularityMedium,
		IncidentQuietPeriod:   schemas.Duration(30 * time.Minute),
		MaxDeploysPerService:  32,
		VerifyPeriod:          schemas.Duration(5 * time.Minute),
		VerifySettle:          schemas.Duration(5 * time.Second),
		DeploySkew:            schemas.Duration(time.Minute),
		GoodAfter:             schemas.Duration(10 * time.Minute),
		Cooldown:              schemas.Duration(10 * time.Minute),
		RollbackBudget:        3,
		BudgetWindow:          schemas.Duration(24 * time.Hour),
		BlastRadius:           4,
		BlastWindow:           schemas.Duration(2 * time.Minute),
		ApprovalTimeout:       schemas.Duration(time.Hour),
		LeaseTTL:              schemas.Duration(10 * time.Second),
		BlockMinShare:         0.6,
		BlockMinErrors:        5,
	}
}

// ErrInvalidConfig is wrapped by every error Config.Validate returns.
var ErrInvalidConfig = errors.New("invalid decide config")

// Validate reports the first problem of the configuration, in words that say how to fix it.
func (c Config) Validate() error {
	var errs []error
	if c.DefaultRollbackWindow <= 0 {
		errs = append(errs, fmt.Errorf("default_rollback_window must be a positive duration such as \"15m\", got %q", time.Duration(c.DefaultRollbackWindow)))
	}
	if !validGranularity(c.DefaultGranularity) {
		errs = append(errs, fmt.Errorf("default_granularity must be fine, medium or coarse, got %q", c.DefaultGranularity))
	}
	if c.IncidentQuietPeriod <= 0 {
		errs = append(errs, fmt.Errorf("incident_quiet_period must be a positive duration such as \"30m\", got %q", time.Duration(c.IncidentQuietPeriod)))
	}
	if c.MaxDeploysPerService < 1 {
		errs = append(errs, fmt.Errorf("max_deploys_per_service must be at least 1, got %d", c.MaxDeploysPerService))
	}
	for _, d := range []struct {
		name string
		v    schemas.Duration
	}{{"verify_period", c.VerifyPeriod}, {"good_after", c.GoodAfter}, {"cooldown", c.Cooldown},
		{"budget_window", c.BudgetWindow}, {"blast_window", c.BlastWindow}, {"approval_timeout", c.ApprovalTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be a positive duration such as \"5m\", got %q", d.name, time.Duration(d.v)))
		}
	}
	if c.DeploySkew < 0 {
		errs = append(errs, fmt.Errorf("deploy_skew must be >= 0, got %q", time.Duration(c.DeploySkew)))
	}
	if c.VerifySettle < 0 || c.VerifySettle >= c.VerifyPeriod {
		errs = append(errs, fmt.Errorf("verify_settle must be >= 0 and shorter than verify_period (%s), got %q", time.Duration(c.VerifyPeriod), time.Duration(c.VerifySettle)))
	}
	if c.LeaseTTL != 0 && c.LeaseTTL < schemas.Duration(time.Second) {
		errs = append(errs, fmt.Errorf("lease_ttl must be at least 1s (or left out for the default 10s), got %q", time.Duration(c.LeaseTTL)))
	}
	if !(c.BlockMinShare > 0 && c.BlockMinShare <= 1) {
		errs = append(errs, fmt.Errorf("block_min_share must be a share in (0, 1] such as 0.6, got %v", c.BlockMinShare))
	}
	if c.BlockMinErrors < 1 {
		errs = append(errs, fmt.Errorf("block_min_errors must be at least 1, got %d", c.BlockMinErrors))
	}
	if c.RollbackBudget < 1 {
		errs = append(errs, fmt.Errorf("rollback_budget must be at least 1, got %d", c.RollbackBudget))
	}
	if c.BlastRadius < 2 {
		errs = append(errs, fmt.Errorf("blast_radius must be at least 2 components, got %d", c.BlastRadius))
	}
	for g, w := range c.GranularityWindows {
		if !validGranularity(g) {
			errs = append(errs, fmt.Errorf("granularity_windows: key %q must be fine, medium or coarse", g))
		} else if w <= 0 {
			errs = append(errs, fmt.Errorf("granularity_windows.%s must be a positive duration, got %q", g, time.Duration(w)))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return nil
}

func validGranularity(g string) bool {
	switch g {
	case schemas.GranularityFine, schemas.GranularityMedium, schemas.GranularityCoarse:
		return true
	}
	return false
}

// LeaseDuration is LeaseTTL, or its default when unset.
func (c Config) LeaseDuration() time.Duration {
	if c.LeaseTTL <= 0 {
		return time.Duration(DefaultConfig().LeaseTTL)
	}
	return time.Duration(c.LeaseTTL)
}
