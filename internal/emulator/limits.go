package emulator

import (
	"math"
	"time"
)

// idKey names one rate or quota counter: an ID within a project.
type idKey struct {
	apiKey string
	id     string
	device bool // device_id counter, else user_id counter
}

// rateEntry is a number of events seen at one instant (Unix ns).
type rateEntry struct {
	at int64
	n  int
}

// window is the event history of one ID within the longest window, oldest
// first. Events of one request form one entry, and entries closer together
// than mergeGap share one (stamped with the later time), so a hot ID costs
// at most a few hundred entries however many requests it sends. Merging
// only ever makes events expire later, never earlier.
type window struct {
	entries []rateEntry
	head    int
}

func (w *window) prune(cutoff int64) {
	for w.head < len(w.entries) && w.entries[w.head].at <= cutoff {
		w.head++
	}
	if w.head == len(w.entries) {
		w.entries, w.head = w.entries[:0], 0
	} else if w.head > len(w.entries)/2 {
		n := copy(w.entries, w.entries[w.head:])
		w.entries, w.head = w.entries[:n], 0
	}
}

// count sums the events newer than cutoff.
func (w *window) count(cutoff int64) int {
	total := 0
	for i := len(w.entries) - 1; i >= w.head && w.entries[i].at > cutoff; i-- {
		total += w.entries[i].n
	}
	return total
}

func (w *window) add(now int64, n int, mergeGap int64) {
	if l := len(w.entries); l > w.head && now-w.entries[l-1].at < mergeGap {
		w.entries[l-1].at = now
		w.entries[l-1].n += n
		return
	}
	w.entries = append(w.entries, rateEntry{at: now, n: n})
}

// daily counts one ID's events per hour over the last 24 hours; Amplitude
// evaluates its daily quota in 1-hour intervals.
type daily struct {
	hour  [24]int64 // Unix hour the slot holds
	count [24]int
}

func (d *daily) total(nowHour int64) int {
	t := 0
	for i := range d.hour {
		if d.hour[i] > nowHour-24 {
			t += d.count[i]
		}
	}
	return t
}

func (d *daily) add(nowHour int64, n int) {
	slot := nowHour % 24
	if d.hour[slot] != nowHour {
		d.hour[slot], d.count[slot] = nowHour, 0
	}
	d.count[slot] += n
}

// limiter holds the per-route rate windows and the daily quotas, which are
// counted over both routes. Not safe for concurrent use; the Emulator's
// mutex guards it.
type limiter struct {
	rates     [2]map[idKey]*window // indexed by routeIndex
	daily     map[idKey]*daily
	lastSweep int64
}

func newLimiter() *limiter {
	return &limiter{
		rates: [2]map[idKey]*window{{}, {}},
		daily: map[idKey]*daily{},
	}
}

func routeIndex(route string) int {
	if route == RouteBatch {
		return 1
	}
	return 0
}

// idCount is one ID's events in the request being checked.
type idCount struct {
	key idKey
	n   int
}

// verdict is the outcome of a rate and quota check. Maps are nil when
// nothing tripped.
type verdict struct {
	throttledDevices, throttledUsers map[string]int // ID → current EPS
	quotaDevices, quotaUsers         map[string]int // ID → events in 24 h
}

func (v *verdict) rejected() bool {
	return v.throttledDevices != nil || v.throttledUsers != nil || v.quotaDevices != nil || v.quotaUsers != nil
}

func put(m *map[string]int, k string, v int) {
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[k] = v
}

// check decides whether ids may send their events now. It changes nothing.
func (l *limiter) check(route string, rc *RouteConfig, ids []idCount, now time.Time) verdict {
	var v verdict
	ns := now.UnixNano()
	rates := l.rates[routeIndex(route)]
	for _, c := range ids {
		if rc.EPS > 0 {
			w := rates[c.key]
			eps := 0
			if over, e := overRate(w, c.n, ns, rc.EPS, rc.Window); over {
				eps = e
			}
			if rc.BurstEPS > 0 {
				if over, e := overRate(w, c.n, ns, rc.BurstEPS, rc.BurstWindow); over && e > eps {
					eps = e
				}
			}
			if eps > 0 {
				if c.key.device {
					put(&v.throttledDevices, c.key.id, eps)
				} else {
					put(&v.throttledUsers, c.key.id, eps)
				}
			}
		}
		if rc.DailyQuota > 0 {
			total := c.n
			if d := l.daily[c.key]; d != nil {
				total += d.total(now.Unix() / 3600)
			}
			if total > rc.DailyQuota {
				if c.key.device {
					put(&v.quotaDevices, c.key.id, total)
				} else {
					put(&v.quotaUsers, c.key.id, total)
				}
			}
		}
	}
	return v
}

// overRate reports whether n more events exceed eps averaged over span, and
// the resulting rate, rounded up so a reported rate is never below the
// threshold it tripped.
func overRate(w *window, n int, now int64, eps int, span time.Duration) (bool, int) {
	count := n
	if w != nil {
		count += w.count(now - span.Nanoseconds())
	}
	secs := span.Seconds()
	if float64(count) <= float64(eps)*secs {
		return false, 0
	}
	return true, int(math.Ceil(float64(count) / secs))
}

// addRate records sent events toward the route's rate windows.
func (l *limiter) addRate(route string, rc *RouteConfig, ids []idCount, now time.Time) {
	if rc.EPS == 0 && rc.BurstEPS == 0 {
		return
	}
	ns := now.UnixNano()
	rates := l.rates[routeIndex(route)]
	// 1/256 of the window keeps a hot ID's history short while delaying
	// expiry by under 0.4 %.
	gap := rc.Window.Nanoseconds() / 256
	for _, c := range ids {
		w := rates[c.key]
		if w == nil {
			w = &window{}
			rates[c.key] = w
		}
		w.prune(ns - rc.Window.Nanoseconds())
		w.add(ns, c.n, gap)
	}
}

// addDaily records ingested events toward the daily quotas.
func (l *limiter) addDaily(ids []idCount, now time.Time) {
	hour := now.Unix() / 3600
	for _, c := range ids {
		d := l.daily[c.key]
		if d == nil {
			d = &daily{}
			l.daily[c.key] = d
		}
		d.add(hour, c.n)
	}
}

// sweep forgets IDs with nothing left in their windows, at most once per
// minute of emulator time, so memory follows the active IDs rather than
// every ID ever seen.
func (l *limiter) sweep(cfg *Config, now time.Time) {
	ns := now.UnixNano()
	if ns-l.lastSweep < time.Minute.Nanoseconds() {
		return
	}
	l.lastSweep = ns
	for i, route := range [2]string{RouteHTTPAPI, RouteBatch} {
		rc := cfg.route(route)
		for k, w := range l.rates[i] {
			w.prune(ns - rc.Window.Nanoseconds())
			if len(w.entries) == 0 {
				delete(l.rates[i], k)
			}
		}
	}
	hour := now.Unix() / 3600
	for k, d := range l.daily {
		if d.total(hour) == 0 {
			delete(l.daily, k)
		}
	}
}
