// Package userrate shares the rates of busy user keys between the replicas
// of a consumer group, so that each replica routes a user by the rate the
// whole group sends for it. Amplitude throttles a user_id above 30 events/s
// on HTTP V2 whichever replica sends its events, and a user's devices hash
// to many partitions, so to many replicas: each sees only its part.
//
// The channel is a small compacted Kafka topic on the cluster the group
// already reads. Every Interval each replica publishes one report, keyed
// by its replica id: the user keys whose local rate is at least a floor
// (at most MaxPublish of them, the fastest), as their route.Tracker
// UserHash and rate. Every replica reads every report and adds, for each
// user key, the latest report of every other replica to its tracker
// (route.Tracker.SetRemote), until the report goes stale (3 intervals
// after it was read). Reports carry hashes keyed by a secret derived from
// the API key, never user ids, and a fingerprint of that key: replicas of
// other projects are ignored, those of other groups of the same project
// count (Amplitude's limit is per project).
//
// The floor is min(Floor, HotEPS / replicas): a user that no replica
// reports sends below the floor on each, so below HotEPS in all, and every
// user above HotEPS group-wide is reported by at least one replica.
//
// Health: the channel is healthy while this replica's own reports make the
// round trip (published, then read back) within the stale time. Only then
// does route.Policy judge user keys by the group's rate (Policy.SetGroup);
// otherwise it falls back to router.user_eps_margin, and the 429 handling
// of package deliver stays the backstop.
//
// Bounds: one message per replica per Interval of at most 7 + 12×MaxPublish
// bytes; at most MaxKeys remote user keys and maxReplicas reports held.
//
// Lifecycle: Run owns the reader and the ticker loop; it returns after ctx
// ends, once it has published a tombstone so that the others forget this
// replica's rates at once.
package userrate

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/metrics"
	"github.com/ampstream/ampstream/internal/route"
)

// Options configure a Sharer.
type Options struct {
	Brokers   []string
	Dialer    *kafka.Dialer    // the reader's (TLS, SASL)
	Transport *kafka.Transport // the writer's and topic creation's
	Topic     string
	Interval  time.Duration // between reports; default 1 s
	Floor     float64       // events/s; local rates below are not reported; default 1
	HotEPS    float64       // router.hot_eps, for the floor (see package doc)
	// MaxPublish caps the keys of one report (the fastest are kept);
	// default 1000, so a report is at most 12 kB.
	MaxPublish int
	// MaxKeys caps the remote user keys held; default 10000.
	MaxKeys int
	// Seed is the tracker's TrackerOptions.UserSeed; its fingerprint marks
	// the reports of replicas that hash users alike.
	Seed uint64
	// ReplicaID names this replica's reports; default host name + random.
	ReplicaID string
}

// maxReplicas bounds the reports held.
const maxReplicas = 1024

// Sharer publishes this replica's user rates and applies the others'.
type Sharer struct {
	opts   Options
	tr     *route.Tracker
	policy *route.Policy
	m      *metrics.Metrics
	log    zerolog.Logger
	fp     uint32

	mu       sync.Mutex
	reports  map[string]*report // by replica id, this one's included
	ownRead  time.Time          // when this replica's last report was read back
	lastSent time.Time          // when its last report was written
	healthy  bool

	sums map[uint64]float64 // apply's scratch
}

type report struct {
	read time.Time     // when it was read here
	ttl  time.Duration // the sender's stale time
	keys []keyRate
}

type keyRate struct {
	h   uint64
	eps float32
}

// New returns a Sharer for tr and policy.
func New(o Options, tr *route.Tracker, policy *route.Policy, m *metrics.Metrics, log zerolog.Logger) *Sharer {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Floor <= 0 {
		o.Floor = 1
	}
	if o.MaxPublish <= 0 {
		o.MaxPublish = 1000
	}
	o.MaxPublish = min(o.MaxPublish, math.MaxUint16)
	if o.MaxKeys <= 0 {
		o.MaxKeys = 10_000
	}
	if o.ReplicaID == "" {
		host, _ := os.Hostname()
		var b [6]byte
		_, _ = rand.Read(b[:])
		o.ReplicaID = host + "-" + hex.EncodeToString(b[:])
	}
	return &Sharer{
		opts: o, tr: tr, policy: policy, m: m,
		log:     log.With().Str("component", "userrate").Logger(),
		fp:      uint32(xxhash.Sum64(binary.BigEndian.AppendUint64(nil, o.Seed))),
		reports: map[string]*report{},
		sums:    map[uint64]float64{},
	}
}

// Seed derives the user-key seed all replicas of a project share from its
// API key, a secret: user ids cannot be chosen to collide without it.
func Seed(apiKey string) uint64 {
	return xxhash.Sum64String("ampstream userrate\x00"+apiKey) | 1
}

// stale is how long a report counts after it was read.
func (s *Sharer) stale() time.Duration { return 3 * s.opts.Interval }

// Run publishes and reads until ctx ends, then publishes a tombstone and
// returns. It returns nil; failures only make the channel unhealthy.
func (s *Sharer) Run(ctx context.Context) error {
	s.ensureTopic(ctx)
	w := &kafka.Writer{
		Addr:         kafka.TCP(s.opts.Brokers...),
		Topic:        s.opts.Topic,
		Transport:    s.opts.Transport,
		Balancer:     kafka.BalancerFunc(func(kafka.Message, ...int) int { return 0 }),
		RequiredAcks: kafka.RequireOne,
		BatchTimeout: time.Millisecond,
		MaxAttempts:  2,
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   s.opts.Brokers,
		Topic:     s.opts.Topic,
		Partition: 0,
		Dialer:    s.opts.Dialer,
		MinBytes:  1,
		MaxBytes:  4 << 20,
		MaxWait:   s.opts.Interval / 2,
	})
	// Reports older than this replica are stale or will be replaced
	// within an interval: start at the end.
	if err := r.SetOffset(kafka.LastOffset); err != nil {
		s.log.Warn().Err(err).Msg("user-rate reader: cannot start at the end")
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.read(ctx, r) }()

	t := time.NewTicker(s.opts.Interval / 2)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
		case now := <-t.C:
			if n%2 == 0 {
				s.publish(ctx, w, now)
			}
			s.apply(now)
			continue
		}
		break
	}
	s.policy.SetGroup(false)
	s.m.UserRateHealthy.Set(0)
	// A tombstone: the others drop this replica's rates now rather than
	// when they go stale.
	tctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := w.WriteMessages(tctx, kafka.Message{Key: []byte(s.opts.ReplicaID)}); err != nil {
		s.m.UserRateErrors.WithLabelValues("publish").Inc()
	}
	cancel()
	_ = w.Close()
	_ = r.Close() // ends a ReadMessage in progress
	wg.Wait()
	return nil
}

func (s *Sharer) ensureTopic(ctx context.Context) {
	cl := &kafka.Client{Addr: kafka.TCP(s.opts.Brokers...), Transport: s.opts.Transport, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: s.opts.Topic, NumPartitions: 1, ReplicationFactor: -1,
		ConfigEntries: []kafka.ConfigEntry{
			// The latest report per replica is all that matters; what a
			// reader joining later needs arrives within an interval.
			{ConfigName: "cleanup.policy", ConfigValue: "compact,delete"},
			{ConfigName: "retention.ms", ConfigValue: "600000"},
			{ConfigName: "segment.ms", ConfigValue: "600000"},
		},
	}}})
	if err == nil {
		err = resp.Errors[s.opts.Topic]
	}
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		s.m.UserRateErrors.WithLabelValues("create_topic").Inc()
		s.log.Warn().Err(err).Str("topic", s.opts.Topic).Msg("cannot create the user-rate topic; relying on it existing")
	}
}

func (s *Sharer) read(ctx context.Context, r *kafka.Reader) {
	for {
		msg, err := r.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.m.UserRateErrors.WithLabelValues("read").Inc()
			s.log.Debug().Err(err).Msg("user-rate topic read failed; retrying")
			t := time.NewTimer(s.opts.Interval)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		s.receive(msg.Key, msg.Value, time.Now())
	}
}

// receive stores one report read at now.
func (s *Sharer) receive(key, value []byte, now time.Time) {
	id := string(key)
	s.m.UserRateReceived.Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(value) == 0 { // a replica stopped
		delete(s.reports, id)
		return
	}
	fp, ttl, keys, err := decode(value, s.opts.MaxPublish)
	if err != nil {
		s.m.UserRateErrors.WithLabelValues("decode").Inc()
		return
	}
	if fp != s.fp {
		return // another project's replicas: their hashes mean nothing here
	}
	if id == s.opts.ReplicaID {
		s.ownRead = now
	}
	if _, ok := s.reports[id]; !ok && len(s.reports) >= maxReplicas {
		s.dropOldest()
	}
	s.reports[id] = &report{read: now, ttl: ttl, keys: keys}
}

func (s *Sharer) dropOldest() {
	var oldest string
	var at time.Time
	for id, r := range s.reports {
		if oldest == "" || r.read.Before(at) {
			oldest, at = id, r.read
		}
	}
	delete(s.reports, oldest)
}

// publish writes this replica's report.
func (s *Sharer) publish(ctx context.Context, w *kafka.Writer, now time.Time) {
	s.mu.Lock()
	replicas := max(1, s.freshReplicas(now))
	s.mu.Unlock()
	floor := s.opts.Floor
	if s.opts.HotEPS > 0 {
		floor = min(floor, s.opts.HotEPS/float64(replicas))
	}
	var keys []keyRate
	s.tr.Users(now, floor, func(h uint64, eps float64) {
		keys = append(keys, keyRate{h: h, eps: float32(eps)})
	})
	if len(keys) > s.opts.MaxPublish {
		slices.SortFunc(keys, func(a, b keyRate) int {
			switch {
			case a.eps > b.eps:
				return -1
			case a.eps < b.eps:
				return 1
			}
			return 0
		})
		keys = keys[:s.opts.MaxPublish]
	}
	wctx, cancel := context.WithTimeout(ctx, s.opts.Interval)
	defer cancel()
	if err := w.WriteMessages(wctx, kafka.Message{Key: []byte(s.opts.ReplicaID), Value: encode(s.fp, s.stale(), keys)}); err != nil {
		if ctx.Err() == nil {
			s.m.UserRateErrors.WithLabelValues("publish").Inc()
			s.log.Debug().Err(err).Msg("user-rate report not published")
		}
		return
	}
	s.m.UserRatePublished.Inc()
	s.m.UserRatePublishKeys.Add(float64(len(keys)))
	s.mu.Lock()
	s.lastSent = now
	s.mu.Unlock()
}

// freshReplicas counts the reports not yet stale. Called with mu held.
func (s *Sharer) freshReplicas(now time.Time) int {
	n := 0
	for _, r := range s.reports {
		if now.Sub(r.read) <= r.ttl {
			n++
		}
	}
	return n
}

// apply sums the other replicas' fresh reports per user key into the
// tracker and updates health.
func (s *Sharer) apply(now time.Time) {
	s.mu.Lock()
	clear(s.sums)
	fresh := 0
	for id, r := range s.reports {
		if now.Sub(r.read) > r.ttl {
			if now.Sub(r.read) > 10*r.ttl {
				delete(s.reports, id) // its replica is gone
			}
			continue
		}
		fresh++
		if id == s.opts.ReplicaID {
			continue
		}
		for _, k := range r.keys {
			if _, ok := s.sums[k.h]; ok || len(s.sums) < s.opts.MaxKeys {
				s.sums[k.h] += float64(k.eps)
			}
		}
	}
	stale := s.stale()
	healthy := !s.lastSent.IsZero() && now.Sub(s.lastSent) <= stale && !s.ownRead.IsZero() && now.Sub(s.ownRead) <= stale
	changed := healthy != s.healthy
	s.healthy = healthy
	s.mu.Unlock()

	until := now.Add(stale)
	for h, eps := range s.sums {
		s.tr.SetRemote(h, eps, until)
	}
	s.policy.SetGroup(healthy)
	s.m.UserRateTrackedKeys.Set(float64(len(s.sums)))
	s.m.UserRateReplicas.Set(float64(fresh))
	if healthy {
		s.m.UserRateHealthy.Set(1)
	} else {
		s.m.UserRateHealthy.Set(0)
	}
	if changed && healthy {
		s.log.Info().Str("topic", s.opts.Topic).Int("replicas", fresh).Msg("user rates are shared with the group")
	} else if changed {
		s.log.Warn().Str("topic", s.opts.Topic).
			Msg("user-rate topic unavailable; user keys fall back to router.user_eps_margin and 429 handling")
	}
}

// Healthy reports whether this replica's reports make the round trip.
func (s *Sharer) Healthy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.healthy
}

// Report layout (big endian): version 1 (1 byte), project fingerprint (4),
// stale time in ms (4), key count (2), then per key its hash (8) and rate
// in events/s (float32, 4).
const (
	version    = 1
	headerSize = 11
	keySize    = 12
)

func encode(fp uint32, ttl time.Duration, keys []keyRate) []byte {
	b := make([]byte, 0, headerSize+keySize*len(keys))
	b = append(b, version)
	b = binary.BigEndian.AppendUint32(b, fp)
	b = binary.BigEndian.AppendUint32(b, uint32(min(ttl.Milliseconds(), math.MaxUint32)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(keys)))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint64(b, k.h)
		b = binary.BigEndian.AppendUint32(b, math.Float32bits(k.eps))
	}
	return b
}

func decode(b []byte, maxKeys int) (fp uint32, ttl time.Duration, keys []keyRate, err error) {
	if len(b) < headerSize || b[0] != version {
		return 0, 0, nil, errors.New("not a version 1 report")
	}
	fp = binary.BigEndian.Uint32(b[1:])
	ttl = time.Duration(binary.BigEndian.Uint32(b[5:])) * time.Millisecond
	n := int(binary.BigEndian.Uint16(b[9:]))
	if len(b) != headerSize+keySize*n {
		return 0, 0, nil, fmt.Errorf("report of %d keys is %d bytes", n, len(b))
	}
	if ttl <= 0 || ttl > time.Minute {
		return 0, 0, nil, fmt.Errorf("stale time %s out of range", ttl)
	}
	keys = make([]keyRate, 0, min(n, maxKeys))
	for i := range min(n, maxKeys) {
		p := b[headerSize+keySize*i:]
		eps := math.Float32frombits(binary.BigEndian.Uint32(p[8:]))
		if !(eps >= 0 && eps < 1e6) { // NaN fails too
			return 0, 0, nil, errors.New("rate out of range")
		}
		keys = append(keys, keyRate{h: binary.BigEndian.Uint64(p), eps: eps})
	}
	return fp, ttl, keys, nil
}
