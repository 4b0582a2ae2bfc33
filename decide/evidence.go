package decide

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/scalpel-dev/scalpel/schemas"
)

// unknownSite labels the errors whose sites lie in no block's line range.
const unknownSite = "unknown site"

// evidenceBlock names the block an anomaly points at and says how it was found, or — with block
// empty — why no block can be named, for the reason of the coarser decision.
//
// An anomaly measured on a block's own series names that block. Otherwise the errors are tallied
// per block: from the evidence's blocks when the events named them, else from the error sites,
// mapped through the line ranges the deploy of the anomaly's version gave (the catalog's for
// blocks it did not place). Each block counts its errors above its own baseline; sites in no
// block count as "unknown site". The block with the most excess errors is named only when it
// holds at least cfg.BlockMinShare of all of them and at least cfg.BlockMinErrors: naming a block
// on thin or spread evidence would roll back code that may be innocent while the real fault keeps
// firing. Ties go to the name that sorts first, so replays agree.
func evidenceBlock(a *schemas.Anomaly, comp *schemas.ManifestComponent, h *serviceHistory, cfg Config) (block, why string) {
	if a.Block != "" && ownSeries(a) {
		return a.Block, fmt.Sprintf("the anomaly is on block %s", a.Block)
	}
	excess := map[string]float64{}
	how := ""
	switch {
	case len(a.Evidence.Blocks) > 0:
		for b, n := range a.Evidence.Blocks {
			excess[b] += float64(n)
		}
	case len(a.Evidence.Sites) > 0:
		m := newSiteMap(h, a, comp)
		for site, n := range a.Evidence.Sites {
			b, ok := m.block(site)
			if !ok {
				b = unknownSite
			}
			excess[b] += float64(n)
		}
		how = m.note()
	default:
		if a.Block != "" {
			return a.Block, fmt.Sprintf("the anomaly is on block %s", a.Block)
		}
		return "", ""
	}
	for b := range excess {
		if b != unknownSite {
			excess[b] = max(excess[b]-a.Evidence.BaselineBlocks[b], 0)
		}
	}
	block, why = nameBlock(excess, cfg)
	if how != "" {
		why += " (" + how + ")"
	}
	return block, why
}

// ownSeries reports whether the anomaly was measured on its block's own series rather than found
// in a component-level test, whose evidence spans several blocks or error sites.
func ownSeries(a *schemas.Anomaly) bool {
	if len(a.Evidence.Sites) > 0 {
		return false
	}
	for b := range a.Evidence.Blocks {
		if b != a.Block {
			return false
		}
	}
	return true
}

// nameBlock applies the confidence rule to the excess errors per block (unknownSite included).
func nameBlock(excess map[string]float64, cfg Config) (block, why string) {
	type part struct {
		name string
		n    float64
	}
	var parts []part
	var total float64
	for b, n := range excess {
		if n > 0 {
			parts = append(parts, part{b, n})
			total += n
		}
	}
	slices.SortFunc(parts, func(x, y part) int {
		// The unknown bucket sorts after real blocks of equal weight: it can never be named.
		return cmp.Or(cmp.Compare(y.n, x.n), cmp.Compare(boolInt(x.name == unknownSite), boolInt(y.name == unknownSite)), cmp.Compare(x.name, y.name))
	})
	i := slices.IndexFunc(parts, func(p part) bool { return p.name != unknownSite })
	switch {
	case total <= 0:
		return "", "no block's errors rose above its own baseline"
	case i < 0:
		return "", fmt.Sprintf("none of the %s errors above baseline lies in a block's line range, so no block can be named", count(total))
	}
	top := parts[i]
	if top.n < float64(cfg.BlockMinErrors) {
		return "", fmt.Sprintf("only %s errors above baseline come from block %s, fewer than the %d needed to name a block with confidence", count(top.n), top.name, cfg.BlockMinErrors)
	}
	if top.n/total < cfg.BlockMinShare {
		spread := make([]string, 0, len(parts))
		for _, p := range parts {
			spread = append(spread, p.name+" "+share(p.n, total))
		}
		return "", fmt.Sprintf("errors are spread over blocks %s: no block can be named with confidence (one needs %s of the errors above baseline)",
			strings.Join(spread, ", "), share(cfg.BlockMinShare, 1))
	}
	return top.name, fmt.Sprintf("%s of the excess errors come from block %s", share(top.n, total), top.name)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// count prints an error count, which baselines scaled to the anomaly's requests make fractional.
func count(n float64) string { return strings.TrimSuffix(fmt.Sprintf("%.1f", n), ".0") }

func share(n, total float64) string {
	if total <= 0 {
		return "all"
	}
	return fmt.Sprintf("%.0f%%", 100*n/total)
}
