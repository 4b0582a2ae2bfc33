package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalpel-dev/scalpel/detect"
	"github.com/scalpel-dev/scalpel/detect/eval"
	"github.com/scalpel-dev/scalpel/internal/config"
)

func init() { evalSubcommands = append(evalSubcommands, newEvalScenariosCmd) }

func newEvalScenariosCmd() *cobra.Command {
	var seed uint64
	var aa, runs, workers int
	var cfgPath, only string
	var scrape time.Duration
	cmd := &cobra.Command{
		Use:   "scenarios",
		Short: "Score the detector on generated deploys next to Argo Rollouts and Flagger rules",
		Long: `Generates deploys with realistic noise (Poisson traffic with a wandering load, log-normal latencies
with a 2 % slow path, 2 % exceptions, 1 % invalid_input) and runs the detector over each, in process
and in event time: A/A (no change), error x1.5/x2/x5/x10, latency regressions, ramps (of errors, of
every latency, of the tail alone), rolling updates (healthy, and with errors or latency regressed),
a service of 16 components deployed together (healthy, and with errors x5 in one; alike, and one
busy among 15 quiet: alpha is shared among a deploy's series, detect.alpha_scope), slow memory leaks
(5 and 1 MB/min), memory that grows as caches fill (with and without a leak, and over ten minutes
with the deploys ten minutes apart), cpu regressions at the same load (also in processes that serve
another component, whose traffic spike is no regression: the samples carry process_rps), shapes of
production traffic that are no regression (a heavy latency tail, timeouts far above the rest of
it (also with the tail twice as slow), retries that make a second mode inside it, process pauses
of 200 ms and of 1 s, a batch job that doubles the median for 10 s every 5 min
(detect.latency_excursion_max), a
traffic mix whose slow share wanders over minutes (detect.latency_drift; also at 15, 10 and 5
req/s, where fewer slow requests tell its drift, and with the tail twice as slow at 50 and 20
req/s), a tail incident half an hour before the deploy (which that drift must not take for a
wander), errors in clumps, bursty traffic, a cold start with latency_warmup set, also in a
rolling update of named instances; with a regression on top where it applies), a throughput
drop, a new version that hangs (not one request more: beside a component that goes on; alone,
its cpu and memory still sent; alone and sending nothing, found through serve's clock ticks), a
traffic spike (also one whose latency
follows the load, on this component or on a busier one of the same service, and a deploy during it,
with every latency x2 on top), low traffic (errors at 0.5 req/s, a tail twice as slow at 5 and
2 req/s), daily cycles (one watched for 6 h with every latency
following the load), changes no deploy made (errors, latency, cpu, a memory leak, a spike, errors in
clumps with and without a rise, the batch job with and without every latency x2: only the series'
own profile sees them), and canary cohorts at 5 % and 50 % of the traffic: healthy, regressed,
beside a baseline cohort that starts with them (a fresh baseline cluster), and healthy beside a
traffic spike, a shared dependency that triples both cohorts' errors, or one that slows both (in the
last two only a canary anomaly counts: the old version's is right). cpu and memory are sampled every
second, and in the rows marked "scraped every 15s" every 15 s, as a metrics scraper reports them;
--scrape 60s samples them every 60 s in every scenario instead. A deploy is watched 330 s after it,
except in the rows marked "watched 1h" (detect.deploy_watch, how long the detector compares a new
version with the old): those some of whose deploys a shorter watch misses (error x1.5, p99 +10 % and
+25 %, low traffic), so their mean is a mean, or a lower bound of the whole watch. --only runs the
scenarios whose name matches a pattern, next to the A/A deploys.

For each scenario: how many deploys were detected (for the quiet ones: false rollbacks), the time
to detect (TTD, event seconds from the deploy to the first anomaly; p50, p95 and mean over all
runs; when some runs were missed, the mean is marked "≥": it counts them as detected at the end
of the watch, a lower bound), "out p95": when the anomaly left the detector, in event seconds from
the deploy to the event after which it was returned (a test decided at a bucket's close is dated at
the bucket's end but returned only once the watermark has passed it, allowed_lateness later; one
that fired within a bucket, on the request that carried it over or, for p50 and p90, on the first
event past the bucket's end), the SPRT floor and the ratios of the mean and the p95 TTD to it
(floored at one 1 s bucket; the floor is an expected time, so the mean is what it compares with
like for like), and what the peers' rules decide on the same events: Argo Rollouts (interval 1m,
failureLimit 0 and 3) and Flagger (interval 1m, threshold 5), both with static thresholds at the
99th percentile of the baseline period's one-minute error rate and p99 latency (of a service of
several components, the changed one's: an analysis template queries one metric). Under the table,
each scenario without a regression that rolled back healthy deploys says which test fired first in
each, and in which runs (-o json lists every one), so a --config can be judged by what it trips;
and each scenario with a regression that missed deploys within its watch says which runs.

Methods — the floor is what no detector can beat: the expected sample number of Wald's SPRT that
knows the exact distribution before and after the change, held to the detector's own false-alarm
rate: alpha is the A/A false-rollback rate measured in this run (at least 1/N, printed under the
table with its exact 95 % interval; --aa sets N, 5000 by default, since at a rate near 0.1 % a
thousand deploys leave it uncertain by a factor of three), beta = 0.01;
E[N] = ((1-beta) ln((1-beta)/alpha) + beta ln(beta/(1-alpha))) / KL, where KL
is the Kullback-Leibler divergence per request of (error category, latency) between the new and
the old model (the latency mixture is integrated numerically). E[N] divided by the new version's
request rate gives seconds. A throughput drop uses the Poisson count per second; a ramp's floor is
the time at which the integral of rate x KL(t) reaches Wald's boundary; without a deploy nobody
knows when the change began, so the floor is Page's CUSUM delay at the same false alarms per second
of watch (Siegmund's approximation); a memory leak has none. For an error regression in a canary a
line under the table also gives the ideal test that compares with the concurrent baseline cohort
(which error came from which cohort, the only information that cancels what moves both): what
the canary's comparison costs before any cost of the detector's own. For a latency regression a
line gives the ideal test that sees only whether each request exceeded the best of the tested
quantiles (detect.latency_quantiles): the latency floor also knows the shape of the tail, which an
exceedance count does not carry.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			full, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			cfg := full.Detect
			stderr := cmd.ErrOrStderr()
			if aa < 1000 {
				fmt.Fprintf(stderr, "note: %d A/A deploys cannot resolve a false-rollback rate near 0.1 %% (the floors then assume at least 1/%d); use --aa 1000 or more for figures worth quoting\n", aa, aa)
			}
			scenarios, err := pickScenarios(only)
			if err != nil {
				return err
			}
			if scenarios, err = scrapedEvery(scenarios, scrape); err != nil {
				return err
			}
			if scrape > 0 {
				fmt.Fprintf(stderr, "cpu and memory reported every %s in every scenario\n", scrape)
			}
			fmt.Fprintf(stderr, "running %d A/A deploys and %d of every other scenario (seed %d)\n", aa, runs, seed)
			start, shown := time.Now(), 0
			rep, err := eval.RunScenarios(cmd.Context(), eval.ScenarioOptions{
				Seed: seed, AARuns: aa, Runs: runs, Workers: workers, Config: cfg, Scenarios: scenarios,
				Progress: func(done, total int) {
					if pct := 100 * done / total; pct/10 > shown/10 && done < total {
						shown = pct
						fmt.Fprintf(stderr, "[%3d%%] %d/%d deploys (%s)\n", pct, done, total, time.Since(start).Round(time.Second))
					}
				},
			})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), struct {
					Config detect.Config `json:"config"`
					*eval.ScenarioReport
				}{cfg, rep})
			}
			return rep.WriteTable(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.Uint64Var(&seed, "seed", 1, "seed of the generated deploys")
	f.IntVar(&aa, "aa", 5000, "A/A deploys (the false-rollback rate's denominator, and the floor's alpha)")
	f.IntVar(&runs, "runs", 100, "deploys of every other scenario")
	f.IntVar(&workers, "workers", 0, "parallel deploys (default: GOMAXPROCS)")
	f.StringVar(&cfgPath, "config", "", "scalpel config file whose detect section is scored (default: the built-in defaults)")
	f.StringVar(&only, "only", "", "run only the scenarios whose name matches this regular expression (the A/A deploys always run: they set the floors' alpha)")
	f.DurationVar(&scrape, "scrape", 0, "report cpu and memory every this long in every scenario, as your metrics scraper does (1s to 1m, whole seconds); the rows already scraped every 15s are left out (default: every second, and those rows every 15 s)")
	return cmd
}

// scrapedEvery sets every scenario's resource sampling to every (0: leaves the suite as it is),
// dropping the scenarios that set their own.
func scrapedEvery(scs []eval.Scenario, every time.Duration) ([]eval.Scenario, error) {
	if every == 0 {
		return scs, nil
	}
	if every < time.Second || every > time.Minute || every%time.Second != 0 {
		return nil, fmt.Errorf("--scrape %s: want whole seconds from 1s to 1m (a sample stands for at most a minute of buckets)", every)
	}
	var out []eval.Scenario
	for _, sc := range scs {
		if sc.ResourceEvery == 0 {
			sc.ResourceEvery = int(every / time.Second)
			out = append(out, sc)
		}
	}
	return out, nil
}

// pickScenarios is the suite, or with a pattern the A/A deploys and the scenarios whose name
// matches it.
func pickScenarios(pattern string) ([]eval.Scenario, error) {
	all := eval.DefaultScenarios()
	if pattern == "" {
		return all, nil
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("--only: %w", err)
	}
	var picked []eval.Scenario
	var names []string
	matched := false
	for _, sc := range all {
		aa := !sc.Regression && sc.RPS == 0
		if m := re.MatchString(sc.Name); aa || m {
			picked = append(picked, sc)
			matched = matched || (m && !aa)
		}
		names = append(names, strconv.Quote(sc.Name))
	}
	if !matched {
		return nil, fmt.Errorf("--only %q matches no scenario; they are: %s", pattern, strings.Join(names, ", "))
	}
	return picked, nil
}
