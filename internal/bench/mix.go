package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/consume"
	"github.com/ampstream/ampstream/internal/traffic"
)

// Mix names a synthetic traffic mix.
type Mix string

const (
	// MixBatch is batch-heavy: most events belong to hot devices (bursts),
	// carry the amplitude-api: batch header, or are two days old (backfill),
	// so they leave in 2000-event /batch requests.
	MixBatch Mix = "batch-heavy"
	// MixRealtime is realtime-heavy: many low-rate devices (about five
	// events each), so nearly everything goes to /2/httpapi.
	MixRealtime Mix = "realtime-heavy"
)

// burstPerDevice bounds each bursting device's events: below ampstream's
// Batch-lane pacing bucket (batch.key_eps_limit 800 × 30 s = 24,000) and
// below the emulator's Batch limit (1000/s over 30 s = 30,000), so neither
// paces nor throttles the run. A benchmark of pacing would be another one.
const burstPerDevice = 8000

// share is one slice of a mix, in per-mille.
type share struct {
	kind     string
	perMille int
}

func (m Mix) shares() []share {
	if m == MixBatch {
		return []share{{"burst", 600}, {"forced_batch", 150}, {"backfill", 150}, {"normal", 98}, {"invalid", 2}}
	}
	return []share{{"normal", 960}, {"user_only", 10}, {"forced_realtime", 10}, {"backfill", 18}, {"invalid", 2}}
}

// generator makes the messages of a mix, deterministically for a seed.
type generator struct {
	g        *traffic.Generator
	kinds    []string // 1000 slots, one per per-mille, interleaved
	n        int
	bursters int
	burstAt  int
	Valid    int
	Invalid  int
}

func newGenerator(m Mix, seed uint64, events int) *generator {
	// Realtime-heavy: about one event per device (two per user), so that
	// even a fast replay of the backlog leaves most keys below the
	// router's hot threshold. Batch-heavy: ~12 normal events per device.
	devices := max(events, 1000)
	if m == MixBatch {
		devices = max(events/50, 1000)
	}
	gen := &generator{g: traffic.New(seed, devices, 0.3, nil)}
	burst := 0
	for _, s := range m.shares() {
		if s.kind == "burst" {
			burst = s.perMille
		}
	}
	gen.bursters = max(events*burst/1000/burstPerDevice+1, 1)
	// Interleave the kinds so any prefix of the stream has the mix's shape.
	counts := map[string]int{}
	for slot := 0; slot < 1000; slot++ {
		best, bestLag := "", -1.0
		for _, s := range m.shares() {
			lag := float64(s.perMille)*float64(slot+1)/1000 - float64(counts[s.kind])
			if lag > bestLag {
				best, bestLag = s.kind, lag
			}
		}
		counts[best]++
		gen.kinds = append(gen.kinds, best)
	}
	return gen
}

func (gen *generator) next() kafka.Message {
	kind := gen.kinds[gen.n%len(gen.kinds)]
	gen.n++
	var m traffic.Msg
	switch kind {
	case "burst":
		m = gen.g.Burst(gen.burstAt % gen.bursters)
		gen.burstAt++
	case "forced_batch":
		m = gen.g.Forced("batch")
	case "forced_realtime":
		m = gen.g.Forced("realtime")
	case "backfill":
		m = gen.g.Backfill()
	case "user_only":
		m = gen.g.UserOnly()
	case "invalid":
		m = gen.g.Invalid()
	default:
		m = gen.g.Normal()
	}
	if m.Valid {
		gen.Valid++
	} else {
		gen.Invalid++
	}
	msg := kafka.Message{Key: m.Key, Value: m.Value}
	for k, v := range m.Headers {
		if k == consume.HeaderLane {
			msg.Headers = append(msg.Headers, kafka.Header{Key: k, Value: []byte(v)})
		}
	}
	return msg
}

// Produced describes a pre-produced topic.
type Produced struct {
	Topic    string  `json:"topic"`
	Mix      Mix     `json:"mix"`
	Events   int     `json:"events"`
	Valid    int     `json:"valid"`
	Invalid  int     `json:"invalid"`
	Bytes    int64   `json:"bytes"`
	Seconds  float64 `json:"produce_seconds"`
	Bursters int     `json:"bursting_devices,omitempty"`
	end      map[int]int64
}

// produce creates a topic and fills it with n events of mix before anything
// consumes it.
func (c *cluster) produce(ctx context.Context, prefix string, m Mix, seed uint64, n, partitions int) (Produced, error) {
	p := Produced{Topic: uniqueName(prefix), Mix: m, Events: n}
	if err := c.createTopic(ctx, p.Topic, partitions); err != nil {
		return p, err
	}
	start := time.Now()
	w := c.writer(p.Topic)
	defer func() { _ = w.Close() }()
	gen := newGenerator(m, seed, n)
	buf := make([]kafka.Message, 0, 20_000)
	for i := 0; i < n; i++ {
		msg := gen.next()
		p.Bytes += int64(len(msg.Value))
		buf = append(buf, msg)
		if len(buf) == cap(buf) || i == n-1 {
			if err := w.WriteMessages(ctx, buf...); err != nil {
				return p, fmt.Errorf("produce to %s: %w", p.Topic, writeErr(err))
			}
			buf = buf[:0]
		}
	}
	p.Seconds = time.Since(start).Seconds()
	p.Valid, p.Invalid = gen.Valid, gen.Invalid
	if m == MixBatch {
		p.Bursters = gen.bursters
	}
	parts, err := c.partitions(ctx, p.Topic)
	if err != nil {
		return p, err
	}
	if p.end, err = c.endOffsets(ctx, p.Topic, parts); err != nil {
		return p, err
	}
	var total int64
	for _, e := range p.end {
		total += e
	}
	if total != int64(n) {
		return p, fmt.Errorf("topic %s holds %d messages, produced %d", p.Topic, total, n)
	}
	return p, nil
}
