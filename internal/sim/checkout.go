package sim

import (
	"time"

	"github.com/scalpel-dev/scalpel/schemas"
)

// The checkout service is the example the demo and the end-to-end tests run: tax-calc, a fine
// component with two blocks (rate-lookup and rounding), and two medium endpoints, cart and payment.
// Version 2.0 of rate-lookup fails; everything else is healthy at every version.

// CheckoutManifest is the checkout service's catalog manifest.
const CheckoutManifest = `service: checkout
rollback_window: 15m
components:
  - component: tax-calc
    kind: function
    granularity: fine
    blocks:
      - {block: rate-lookup, file: tax/calc.go, lines: "40-88"}
      - {block: rounding, file: tax/calc.go, lines: "90-120"}
  - component: cart
    kind: endpoint
    granularity: medium
  - component: payment
    kind: endpoint
    granularity: medium
`

// CheckoutBad is how rate-lookup 2.0 behaves by default: 20 % exceptions thrown at
// tax/calc.go:57, inside rate-lookup's lines, so the engine can name the block.
var CheckoutBad = Behaviour{ErrorRate: 0.2, ErrorCategory: schemas.ErrException, ErrorSite: "tax/calc.go:57", LatencyMedianMS: 20, LatencySigma: 0.35}

// Checkout returns the simulated checkout service at version 1.0, with rate-lookup behaving as
// CheckoutBad at 2.0 (set Block("tax-calc", "rate-lookup").Versions["2.0"] for another failure).
func Checkout(seed uint64) *Service {
	return New("checkout", seed,
		&Component{Name: "tax-calc", RPS: 40, Blocks: []*Block{
			{Name: "rate-lookup", Share: 0.6, Active: "1.0", Versions: map[string]Behaviour{"2.0": CheckoutBad}},
			{Name: "rounding", Share: 0.4, Active: "1.0"},
		}},
		&Component{Name: "cart", RPS: 30, Blocks: []*Block{{Active: "1.0"}}},
		&Component{Name: "payment", RPS: 20, Blocks: []*Block{{Active: "1.0"}}},
	)
}

// CheckoutDeploy is the deploy event that sets every component and block of checkout to v.
func CheckoutDeploy(id string, ts time.Time, v string) schemas.DeployEvent {
	return schemas.DeployEvent{ID: id, TS: ts, Service: "checkout", AppVersion: v,
		Components: []schemas.DeployComponent{
			{Component: "tax-calc", Version: v, Blocks: []schemas.DeployBlock{{Block: "rate-lookup", Version: v}, {Block: "rounding", Version: v}}},
			{Component: "cart", Version: v},
			{Component: "payment", Version: v},
		}}
}
