package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/fetch"
)

// baselineBodyEvents is the baseline's fixed request size, the Batch API's
// limit, which is also what ampstream's Batch lane sends.
const baselineBodyEvents = 2000

// baseline is the least a Kafka-to-HTTP forwarder can do, built like
// ampstream's consumer (kafka-go ConsumerGroup, one Reader per partition,
// commits through the generation once a second): it copies raw message
// bytes into 2000-event bodies, POSTs each to the sink, and commits what was
// answered 200. No validation, routing, gzip, ordering, retries or metrics.
// It is the yardstick ampstream's throughput is divided by.
type baseline struct {
	brokers  []string
	topic    string
	group    string
	url      string
	log      zerolog.Logger
	dialer   *kafka.Dialer
	http     *http.Client
	conn     bool         // fetch through internal/fetch instead of kafka-go's Reader
	joined   atomic.Int64 // unix ns when the first generation started
	resolved atomic.Int64 // events answered 200

	mu     sync.Mutex
	offs   map[int]int64 // next offset to commit per partition
	dirty  bool
	errs   []error
	errsMu sync.Mutex
}

func newBaseline(brokers []string, topic, group, url string, log zerolog.Logger) *baseline {
	return &baseline{
		brokers: brokers, topic: topic, group: group, url: url + "/batch", log: log,
		dialer: &kafka.Dialer{ClientID: "ampstream-bench-baseline", Timeout: 10 * time.Second, DualStack: true},
		http: &http.Client{Transport: &http.Transport{
			MaxIdleConns: 32, MaxIdleConnsPerHost: 32, IdleConnTimeout: 90 * time.Second, DisableCompression: true,
		}},
		offs: map[int]int64{},
	}
}

func (b *baseline) fail(err error) {
	b.errsMu.Lock()
	b.errs = append(b.errs, err)
	b.errsMu.Unlock()
}

// run consumes until ctx ends.
func (b *baseline) run(ctx context.Context) error {
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: b.group, Brokers: b.brokers, Dialer: b.dialer, Topics: []string{b.topic},
		HeartbeatInterval: time.Second, SessionTimeout: 10 * time.Second, RebalanceTimeout: 15 * time.Second,
		StartOffset: kafka.FirstOffset,
	})
	if err != nil {
		return err
	}
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				break
			}
			// A fresh broker answers GROUP_COORDINATOR_NOT_AVAILABLE while it
			// creates __consumer_offsets; kafka-go retries after its join
			// backoff (internal/consume/DESIGN.md).
			continue
		}
		b.joined.CompareAndSwap(0, time.Now().UnixNano())
		for _, a := range gen.Assignments[b.topic] {
			gen.Start(func(ctx context.Context) { b.partition(ctx, gen, a.ID, a.Offset) })
		}
		gen.Start(func(ctx context.Context) {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				b.commit(gen)
			}
		})
	}
	err = cg.Close()
	b.http.CloseIdleConnections()
	b.errsMu.Lock()
	defer b.errsMu.Unlock()
	return errors.Join(append(b.errs, err)...)
}

func (b *baseline) commit(gen *kafka.Generation) {
	b.mu.Lock()
	if !b.dirty {
		b.mu.Unlock()
		return
	}
	offs := make(map[int]int64, len(b.offs))
	for p, o := range b.offs {
		offs[p] = o
	}
	b.dirty = false
	b.mu.Unlock()
	if err := gen.CommitOffsets(map[string]map[int]int64{b.topic: offs}); err != nil {
		b.mu.Lock()
		b.dirty = true
		b.mu.Unlock()
	}
}

func (b *baseline) partition(ctx context.Context, gen *kafka.Generation, id int, offset int64) {
	if b.conn {
		b.partitionConn(ctx, gen, id, offset)
		return
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: b.brokers, Topic: b.topic, Partition: id, Dialer: b.dialer,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 250 * time.Millisecond, QueueCapacity: 10_000,
	})
	defer func() { _ = r.Close() }()
	if offset < 0 {
		offset = kafka.FirstOffset
	}
	if err := r.SetOffset(offset); err != nil {
		b.fail(err)
		return
	}
	body := b.newBody(id)
	// Linger like ampstream's Batch lane: a body leaves 200 ms after its
	// first event at the latest. One deadline per body, not per fetch: a
	// context per message would cost the baseline ~3 allocations and a
	// timer per event, which no forwarder needs.
	l := linger{parent: ctx}
	defer l.stop()
	for {
		m, err := r.FetchMessage(l.context())
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, context.DeadlineExceeded) {
				l.stop()
				if !body.flush(ctx) {
					break
				}
				continue
			}
			b.fail(fmt.Errorf("baseline fetch %s/%d: %w", b.topic, id, err))
			break
		}
		if body.n == 0 {
			l.start(200 * time.Millisecond)
		}
		if body.add(m) {
			l.stop()
			if !body.flush(ctx) {
				break
			}
		}
	}
	b.commit(gen) // before returning: kafka-go refuses commits on an ended generation
}

// partitionConn is partition reading through internal/fetch, ampstream's
// fetch path: one fetch at a time from a kafka-go Conn in this goroutine.
// A body lingers at most about 200 ms: it is sent before a fetch once it is
// that old (a fetch of a caught-up partition waits up to 250 ms).
func (b *baseline) partitionConn(ctx context.Context, gen *kafka.Generation, id int, offset int64) {
	if offset < 0 {
		offset = kafka.FirstOffset
	}
	body := b.newBody(id)
	ok := true
	f := fetch.New(fetch.Config{
		Dialer: b.dialer, Brokers: b.brokers, Topic: b.topic, Partition: id, Offset: offset,
		MaxBytes: 10 << 20, MaxWait: 250 * time.Millisecond, Log: b.log,
		BeforeFetch: func(fetch.Position) {
			if ok && body.n > 0 && time.Since(body.opened) >= 200*time.Millisecond {
				ok = body.flush(ctx)
			}
		},
	})
	defer f.Close()
	for ok {
		m, _, err := f.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			b.fail(fmt.Errorf("baseline fetch %s/%d: %w", b.topic, id, err))
			break
		}
		if body.add(m) && !body.flush(ctx) {
			break
		}
	}
	b.commit(gen) // before returning: kafka-go refuses commits on an ended generation
}

// body is a partition's request body being filled: raw message values
// between the envelope's brackets.
type body struct {
	b      *baseline
	id     int // partition
	buf    *bytes.Buffer
	n      int       // events in buf
	last   int64     // offset of the last one
	opened time.Time // when the first one was added
}

func (b *baseline) newBody(id int) *body {
	return &body{b: b, id: id, buf: bytes.NewBuffer(make([]byte, 0, 1<<20))}
}

// add appends m's value and reports whether the body is full.
func (w *body) add(m kafka.Message) bool {
	if w.n == 0 {
		w.buf.WriteString(`{"api_key":"k","events":[`)
		w.opened = time.Now()
	} else {
		w.buf.WriteByte(',')
	}
	w.buf.Write(m.Value)
	w.n++
	w.last = m.Offset
	return w.n == baselineBodyEvents
}

// flush posts the body until the sink answers 200 and marks its offsets
// for the next commit. It returns false if ctx ended first.
func (w *body) flush(ctx context.Context) bool {
	if w.n == 0 {
		return true
	}
	w.buf.WriteString(`]}`)
	for {
		if err := w.b.post(ctx, w.buf.Bytes()); err == nil {
			break
		} else if ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.b.resolved.Add(int64(w.n))
	w.b.mu.Lock()
	w.b.offs[w.id], w.b.dirty = w.last+1, true
	w.b.mu.Unlock()
	w.n = 0
	w.buf.Reset()
	return true
}

func (b *baseline) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.http.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("sink answered %d", resp.StatusCode)
	}
	return nil
}

// linger is the deadline of the body being filled: the parent context while
// no body is open.
type linger struct {
	parent context.Context
	ctx    context.Context
	cancel context.CancelFunc
}

func (l *linger) start(d time.Duration) {
	l.stop()
	l.ctx, l.cancel = context.WithTimeout(l.parent, d)
}

func (l *linger) stop() {
	if l.cancel != nil {
		l.cancel()
		l.ctx, l.cancel = nil, nil
	}
}

func (l *linger) context() context.Context {
	if l.ctx != nil {
		return l.ctx
	}
	return l.parent
}
