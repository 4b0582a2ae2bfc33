// Package shop is an example HTTP service that embeds scalpel's two SDKs: it publishes its
// telemetry with ingest/telemetry and obeys rollback commands with actuate/deployer. It ships two
// releases in one binary, as a service built for block-level rollback does: 2.0 changes two blocks
// of its pricing function — discount, which has a bug, and tax, which is fine — and its catalog
// endpoint. scalpel's end-to-end test and `scalpel demo --live` run it to show the buggy block go
// back to 1.0 while the rest of 2.0 stays live.
//
// Every answer says which versions produced it (X-Block-Version, X-Endpoint-Version), so whoever
// calls the shop can see a rollback happen from the outside.
package shop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalpel-dev/scalpel/actuate/deployer"
	"github.com/scalpel-dev/scalpel/ingest/telemetry"
	"github.com/scalpel-dev/scalpel/schemas"
)

// Service is the shop's service name.
const Service = "shop"

// Headers that say which versions answered.
const (
	HeaderBlockVersion    = "X-Block-Version"
	HeaderEndpointVersion = "X-Endpoint-Version"
)

// Manifest is the shop's catalog entry: pricing is rolled back block by block (fine), the
// endpoints as a whole (medium).
const Manifest = `service: shop
rollback_window: 15m
components:
  - component: pricing
    kind: function
    granularity: fine
    blocks:
      - {block: discount, file: deployments/examples/shop/shop/pricing.go, lines: "1-60"}
      - {block: tax, file: deployments/examples/shop/shop/pricing.go, lines: "61-100"}
  - component: quote
    kind: endpoint
    granularity: medium
  - component: catalog
    kind: endpoint
    granularity: medium
`

// Releases the binary carries.
const (
	V1 = "1.0"
	V2 = "2.0"
)

// DeployEvent is what CI would publish when release version goes out: in 2.0 pricing's two blocks
// and the catalog endpoint change; quote does not.
func DeployEvent(id string, ts time.Time, version string) schemas.DeployEvent {
	return schemas.DeployEvent{ID: id, TS: ts, Service: Service, AppVersion: version, Actor: "shop example",
		Components: []schemas.DeployComponent{
			{Component: "pricing", Version: version, Blocks: []schemas.DeployBlock{
				{Block: "discount", Version: version}, {Block: "tax", Version: version}}},
			{Component: "catalog", Version: version},
			{Component: "quote", Version: V1},
		}}
}

// DiscountFunc returns the discount on a line of qty items of sku costing price in total.
type DiscountFunc func(sku string, qty int, price float64) (float64, error)

// TaxFunc returns the tax on an amount spent on sku.
type TaxFunc func(sku string, amount float64) float64

// Shop is the running service.
type Shop struct {
	Discount *deployer.Block[DiscountFunc]
	Tax      *deployer.Block[TaxFunc]
	Catalog  *deployer.Handler
	Quote    *deployer.Handler

	Deployer  *deployer.Deployer
	Telemetry *telemetry.Publisher

	mux *http.ServeMux
}

// Options configures New.
type Options struct {
	// Instance names this instance in acks and in its telemetry (default shop-1).
	Instance string
	// Aggregate is the telemetry aggregation interval; 0 sends one event per request.
	Aggregate time.Duration
	// Subjects is the subject prefix scalpel runs with.
	Subjects schemas.Subjects
	Logger   *slog.Logger
}

// New builds the shop on nc, running release 1.0. Start the deployer with Start.
func New(nc *nats.Conn, o Options) (*Shop, error) {
	if o.Instance == "" {
		o.Instance = "shop-1"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Shop{
		Discount: deployer.NewBlock[DiscountFunc]("pricing", "discount").Register(V1, discountV1).Register(V2, discountV2),
		Tax:      deployer.NewBlock[TaxFunc]("pricing", "tax").Register(V1, taxV1).Register(V2, taxV2),
		mux:      http.NewServeMux(),
	}
	s.Catalog = deployer.NewHandler("catalog").Register(V1, catalogHandler(V1)).Register(V2, catalogHandler(V2))
	s.Quote = deployer.NewHandler("quote").Register(V1, http.HandlerFunc(s.quote))

	d, err := deployer.New(nc, Service, deployer.WithInstance(o.Instance), deployer.WithSubjects(o.Subjects),
		deployer.WithLogger(o.Logger.With("sdk", "deployer")))
	if err != nil {
		return nil, err
	}
	if err := d.Register(s.Discount, s.Tax, s.Catalog, s.Quote); err != nil {
		return nil, err
	}
	if err := d.OnAppRollback(func(_ context.Context, cmd schemas.RollbackCommand) error {
		// Every switchable piece of the shop is in-process, and the deployer has already switched
		// those that carry cmd.ToVersion; a real service would also ask its orchestrator here.
		o.Logger.Info("application rolled back", "to", cmd.ToVersion)
		return nil
	}); err != nil {
		return nil, err
	}
	s.Deployer = d
	topts := []telemetry.Option{telemetry.WithVersion(V1), telemetry.WithVersionSource(d.Version),
		telemetry.WithInstance(o.Instance), // each instance then warms up on its own under detect.latency_warmup
		telemetry.WithSubjects(o.Subjects), telemetry.WithLogger(o.Logger.With("sdk", "telemetry"))}
	if o.Aggregate > 0 {
		topts = append(topts, telemetry.WithAggregation(o.Aggregate))
	}
	if s.Telemetry, err = telemetry.NewPublisher(nc, Service, topts...); err != nil {
		return nil, err
	}
	s.mux.Handle("GET /quote", s.Telemetry.Middleware("quote", s.Quote))
	s.mux.Handle("GET /products", s.Telemetry.Middleware("catalog", s.Catalog))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	return s, nil
}

// Start reads the desired state from scalpel and starts obeying commands.
func (s *Shop) Start(ctx context.Context) error { return s.Deployer.Start(ctx) }

// Close stops obeying and flushes telemetry.
func (s *Shop) Close(ctx context.Context) error {
	s.Deployer.Stop()
	return s.Telemetry.Close(ctx)
}

// Handler is the shop's HTTP API.
func (s *Shop) Handler() http.Handler { return s.mux }

// Release switches every piece to version, as starting the new binary of that release would.
func (s *Shop) Release(version string) error {
	for _, t := range []deployer.Target{s.Discount, s.Tax, s.Catalog} {
		if err := t.Switch(version); err != nil {
			return err
		}
	}
	return nil
}

// Quote is the answer of GET /quote.
type Quote struct {
	SKU      string  `json:"sku"`
	Qty      int     `json:"qty"`
	Price    float64 `json:"price"`
	Discount float64 `json:"discount"`
	Tax      float64 `json:"tax"`
	Total    float64 `json:"total"`
}

// quote prices a line: GET /quote?sku=sku-3&qty=2.
func (s *Shop) quote(w http.ResponseWriter, r *http.Request) {
	sku := r.URL.Query().Get("sku")
	qty, err := strconv.Atoi(r.URL.Query().Get("qty"))
	if sku == "" || err != nil || qty < 1 || qty > 1000 {
		http.Error(w, "want ?sku=NAME&qty=1..1000", http.StatusBadRequest)
		return
	}
	q := Quote{SKU: sku, Qty: qty, Price: unitPrice(sku) * float64(qty)}
	var dv, tv string
	err = s.Telemetry.Observe(s.Discount, func() error {
		var f DiscountFunc
		dv, f = s.Discount.Current()
		var err error
		q.Discount, err = f(sku, qty, q.Price)
		return err
	})
	w.Header().Set(HeaderEndpointVersion, "quote="+s.Quote.Active())
	if err != nil {
		w.Header().Set(HeaderBlockVersion, "pricing/discount="+dv)
		http.Error(w, "pricing failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	_ = s.Telemetry.Observe(s.Tax, func() error {
		var f TaxFunc
		tv, f = s.Tax.Current()
		q.Tax = f(sku, q.Price-q.Discount)
		return nil
	})
	q.Total = q.Price - q.Discount + q.Tax
	w.Header().Set(HeaderBlockVersion, "pricing/discount="+dv+", pricing/tax="+tv)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(q)
}

// unitPrice is a stable made-up price per SKU.
func unitPrice(sku string) float64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(sku))
	return float64(100+h.Sum32()%9900) / 100
}

// lookup stands for the I/O a real pricing block does (a rules service, a cache): a few
// milliseconds, varying by SKU, the same in every version. Milliseconds, not microseconds, so that
// scheduler jitter on a busy machine stays well under the detector's minimum latency effect — so that versions differ by what they
// compute, not by nanoseconds of formatting an error.
// The spread (log-normal, σ 0.4) is what real I/O has; a near-constant latency would make any
// scheduler hiccup look like a shifted distribution.
func lookup(sku string, base time.Duration) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(sku))
	d := float64(base+time.Duration(h.Sum32()%2000)*time.Microsecond) * math.Exp(0.4*rand.NormFloat64())
	time.Sleep(time.Duration(d))
}

// discountV1: 10 % off ten or more.
func discountV1(sku string, qty int, price float64) (float64, error) {
	lookup(sku, 4*time.Millisecond)
	if qty >= 10 {
		return round2(price * 0.10), nil
	}
	return 0, nil
}

// errNoTier is 2.0's bug: the tier table was built from last season's SKUs.
var errNoTier = errors.New("discount tier not found")

var tiers = map[string]float64{"sku-0": 0.05, "sku-1": 0.05, "sku-2": 0.08, "sku-3": 0.08, "sku-4": 0.10, "sku-5": 0.10, "sku-6": 0.12}

// discountV2: tiered discounts per SKU — and a failure for every SKU missing from the table.
func discountV2(sku string, qty int, price float64) (float64, error) {
	lookup(sku, 4*time.Millisecond)
	rate, ok := tiers[sku]
	if !ok {
		return 0, fmt.Errorf("%s: %w", sku, errNoTier)
	}
	if qty >= 5 {
		rate += 0.02
	}
	return round2(price * rate), nil
}

// taxV1: 20 %, rounded half up to the cent.
// Both blocks cost the same, so that when 2.0's discount fails early (and tax never runs) the
// pricing component's latency mix does not shift. Tax's lookup does not vary by SKU: 2.0's
// discount lets only the SKUs in its tier table through to tax, and a cost that varied by SKU
// would make tax 2.0, which is fine, look slower than 1.0 for as long as that bug served.
func taxV1(_ string, amount float64) float64 {
	lookup("tax", 4*time.Millisecond)
	return round2(amount * 0.20)
}

// taxV2: 20 %, rounded half to even (what the accountants asked for). Fine.
func taxV2(_ string, amount float64) float64 {
	lookup("tax", 4*time.Millisecond)
	return math.RoundToEven(amount*0.20*100) / 100
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// Product is one entry of GET /products.
type Product struct {
	SKU   string  `json:"sku"`
	Price float64 `json:"price"`
	// Currency is new in 2.0.
	Currency string `json:"currency,omitempty"`
}

func catalogHandler(version string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		lookup("catalog", 2*time.Millisecond)
		ps := make([]Product, 0, 10)
		for i := range 10 {
			sku := "sku-" + strconv.Itoa(i)
			p := Product{SKU: sku, Price: unitPrice(sku)}
			if version == V2 {
				p.Currency = "EUR"
			}
			ps = append(ps, p)
		}
		w.Header().Set(HeaderEndpointVersion, "catalog="+version)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ps)
	})
}

// BlockVersions parses an X-Block-Version header into block → version.
func BlockVersions(h string) map[string]string {
	out := map[string]string{}
	for _, part := range strings.Split(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok {
			out[k] = v
		}
	}
	return out
}
