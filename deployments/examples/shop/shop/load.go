package shop

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Observed is what the load generator saw in one window: answers by what produced them.
type Observed struct {
	// Requests and errors (5xx) of the window, per answering version key, e.g.
	// "pricing/discount=2.0" or "catalog=2.0".
	Requests map[string]int
	Errors   map[string]int
	// Last is the latest value seen of each version key's left-hand side, e.g.
	// Last["pricing/discount"] = "1.0".
	Last map[string]string
	// Straddled counts answers to requests sent before the window began: they belong to no
	// window, so a window after a rollback holds only requests sent after it.
	Straddled int
}

// Load sends GET /quote and GET /products to base at rps requests per second until ctx ends,
// and records which versions answered, as a client would see them.
type Load struct {
	base   string
	client *http.Client

	mu    sync.Mutex
	cur   Observed
	since time.Time // when the current window began
	last  map[string]string
	errs  int
}

// NewLoad prepares a load generator against base (e.g. http://127.0.0.1:8081).
func NewLoad(base string) *Load {
	return &Load{base: strings.TrimSuffix(base, "/"), client: &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64}}, last: map[string]string{}, cur: newObserved(), since: time.Now()}
}

func newObserved() Observed {
	return Observed{Requests: map[string]int{}, Errors: map[string]int{}, Last: map[string]string{}}
}

// Run sends requests until ctx ends: nine quotes for every catalog read, spread over SKUs sku-0 to
// sku-9, from a few workers.
func (l *Load) Run(ctx context.Context, rps int) {
	const workers = 8
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) * workers / float64(max(rps, 1)))
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			t := time.NewTicker(interval)
			defer t.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				path := "/quote?sku=sku-" + strconv.Itoa(rng.IntN(10)) + "&qty=" + strconv.Itoa(1+rng.IntN(12))
				if i%10 == 9 {
					path = "/products"
				}
				l.get(ctx, path)
			}
		}()
	}
	wg.Wait()
}

func (l *Load) get(ctx context.Context, path string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.base+path, nil)
	if err != nil {
		return
	}
	sent := time.Now()
	resp, err := l.client.Do(req)
	if err != nil {
		l.mu.Lock()
		l.errs++
		l.mu.Unlock()
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	var keys []string
	for k, v := range BlockVersions(resp.Header.Get(HeaderBlockVersion)) {
		keys = append(keys, k+"="+v)
	}
	if ev := resp.Header.Get(HeaderEndpointVersion); ev != "" {
		keys = append(keys, ev)
	}
	failed := resp.StatusCode >= 500
	l.mu.Lock()
	defer l.mu.Unlock()
	if sent.Before(l.since) {
		// In flight across a Take: the shop may have answered it before a switch that the
		// window is meant to follow, so it counts in neither window.
		l.cur.Straddled++
		return
	}
	for _, k := range keys {
		l.cur.Requests[k]++
		if failed {
			l.cur.Errors[k]++
		}
		name, v, _ := strings.Cut(k, "=")
		l.last[name] = v
	}
}

// Take returns what was observed since the last Take and starts a new window, which counts only
// requests sent from now on.
func (l *Load) Take() Observed {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := l.cur
	for k, v := range l.last {
		o.Last[k] = v
	}
	l.cur = newObserved()
	l.since = time.Now()
	return o
}

// Latest returns the latest version seen answering for name (e.g. "pricing/discount").
func (l *Load) Latest(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last[name]
}
