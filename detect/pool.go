package detect

import "github.com/DataDog/sketches-go/ddsketch"

// pool recycles what open buckets borrow (a sketch, block and site maps), so steady state
// allocates nothing per bucket and a series holds no sketch of its own between buckets.
type pool struct {
	sk     *sketches
	sks    []*ddsketch.DDSketch
	blocks []map[string]blockTally
	sites  []map[string]int64
}

func (p *pool) sketch() *ddsketch.DDSketch {
	if n := len(p.sks); n > 0 {
		s := p.sks[n-1]
		p.sks = p.sks[:n-1]
		return s
	}
	return p.sk.new()
}

func (p *pool) blockMap() map[string]blockTally {
	if n := len(p.blocks); n > 0 {
		m := p.blocks[n-1]
		p.blocks = p.blocks[:n-1]
		return m
	}
	return make(map[string]blockTally)
}

func (p *pool) siteMap() map[string]int64 {
	if n := len(p.sites); n > 0 {
		m := p.sites[n-1]
		p.sites = p.sites[:n-1]
		return m
	}
	return make(map[string]int64)
}

// poolCap bounds each free list: enough to serve a burst of series closing in the same bucket
// without allocating, small enough that after a burst the idle free lists do not hold memory
// per series.
const poolCap = 1024

// releaseSketch returns a sketch to the free list.
func (p *pool) releaseSketch(sk *ddsketch.DDSketch) {
	if len(p.sks) < poolCap {
		sk.Clear()
		p.sks = append(p.sks, sk)
	}
}

// release returns a closed bucket's borrowings.
func (p *pool) release(b *bucket) {
	if b.sk != nil {
		p.releaseSketch(b.sk)
	}
	if b.blocks != nil && len(p.blocks) < poolCap {
		clear(b.blocks)
		p.blocks = append(p.blocks, b.blocks)
	}
	if b.sites != nil && len(p.sites) < poolCap {
		clear(b.sites)
		p.sites = append(p.sites, b.sites)
	}
	b.sk, b.blocks, b.sites = nil, nil, nil
}
