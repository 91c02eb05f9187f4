// Package dlq writes rejected events to the dead-letter topic: the original
// key, value and headers, plus headers that say why and where from. A record
// counts as done (its offset may be committed) only once Kafka acknowledged
// the write; while the DLQ is unavailable, writes are retried and nothing is
// skipped, so the source partitions stop advancing instead of losing events.
//
// Concurrency: Write may be called from any goroutine and never blocks; one
// owned goroutine batches and writes. Stop waits for it.
package dlq

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/metrics"
)

// Header names added to every dead-lettered message.
const (
	HeaderReason    = "ampstream-reason"
	HeaderDetail    = "ampstream-detail"
	HeaderTopic     = "ampstream-source-topic"
	HeaderPartition = "ampstream-source-partition"
	HeaderOffset    = "ampstream-source-offset"
	HeaderFailedAt  = "ampstream-failed-at"
)

// Record is one message to dead-letter.
type Record struct {
	Msg    kafka.Message // the source message, as consumed
	Reason string        // bounded reason (a metric label)
	Detail string        // human-readable, no secrets
	Done   func()        // called once the DLQ write is acknowledged
}

// Message is the record as the dead-letter topic stores it: the source
// message's key, value and headers, and the Header* headers, failed at at.
func (r Record) Message(at time.Time) kafka.Message {
	h := make([]kafka.Header, 0, len(r.Msg.Headers)+6)
	h = append(h, r.Msg.Headers...)
	h = append(h,
		kafka.Header{Key: HeaderReason, Value: []byte(r.Reason)},
		kafka.Header{Key: HeaderDetail, Value: []byte(r.Detail)},
		kafka.Header{Key: HeaderTopic, Value: []byte(r.Msg.Topic)},
		kafka.Header{Key: HeaderPartition, Value: []byte(strconv.Itoa(r.Msg.Partition))},
		kafka.Header{Key: HeaderOffset, Value: []byte(strconv.FormatInt(r.Msg.Offset, 10))},
		kafka.Header{Key: HeaderFailedAt, Value: []byte(at.UTC().Format(time.RFC3339Nano))},
	)
	return kafka.Message{Key: r.Msg.Key, Value: r.Msg.Value, Headers: h}
}

// Writer dead-letters records.
type Writer struct {
	w      *kafka.Writer
	m      *metrics.Metrics
	log    zerolog.Logger
	sample zerolog.Logger

	mu     sync.Mutex
	queue  []Record
	notify chan struct{}

	failing atomic.Bool
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
}

// New returns a Writer producing to topic through w (its Topic must be empty
// or equal to topic). Call Start.
func New(w *kafka.Writer, m *metrics.Metrics, log zerolog.Logger) *Writer {
	l := log.With().Str("component", "dlq").Str("dlq_topic", w.Topic).Logger()
	d := &Writer{
		w:      w,
		m:      m,
		log:    l,
		sample: l.Sample(&zerolog.BurstSampler{Burst: 20, Period: time.Second}),
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d
}

// Start launches the writing goroutine.
func (d *Writer) Start() { go d.run() }

// Stop abandons unwritten records (their offsets stay uncommitted, so they
// are consumed again) and waits for the goroutine; call it after the
// consumer has drained.
func (d *Writer) Stop() {
	d.cancel()
	<-d.done
	_ = d.w.Close()
}

// Healthy returns an error while DLQ writes are failing.
func (d *Writer) Healthy() error {
	if d.failing.Load() {
		return errors.New("dead-letter topic writes are failing; affected partitions are not advancing")
	}
	return nil
}

// Write queues r. It never blocks: records are already counted in the
// consumer's in-flight budget, which bounds this queue.
func (d *Writer) Write(r Record) {
	d.sample.Warn().Str("reason", r.Reason).Str("detail", r.Detail).Str("topic", r.Msg.Topic).
		Int("partition", r.Msg.Partition).Int64("offset", r.Msg.Offset).Msg("dead-lettering event")
	d.mu.Lock()
	d.queue = append(d.queue, r)
	d.mu.Unlock()
	select {
	case d.notify <- struct{}{}:
	default:
	}
}

// maxBatch bounds one WriteMessages call.
const maxBatch = 500

func (d *Writer) run() {
	defer close(d.done)
	var batch []Record
	for {
		if len(batch) == 0 {
			select {
			case <-d.ctx.Done():
				return
			case <-d.notify:
			}
			d.mu.Lock()
			n := min(len(d.queue), maxBatch)
			batch = append(batch[:0], d.queue[:n]...)
			clear(d.queue[:n])
			d.queue = d.queue[n:]
			if len(d.queue) > 0 {
				select {
				case d.notify <- struct{}{}:
				default:
				}
			}
			d.mu.Unlock()
			if len(batch) == 0 {
				continue
			}
		}
		if d.write(batch) {
			// The written records must not stay reachable here: their keys
			// and values are views of memory the consumer stops counting
			// once they are resolved (a big record batch's block).
			clear(batch)
			batch = batch[:0]
		}
	}
}

// write retries until the batch is written or the writer stops; it reports
// whether the batch is resolved.
func (d *Writer) write(batch []Record) bool {
	msgs := make([]kafka.Message, len(batch))
	now := time.Now()
	for i, r := range batch {
		msgs[i] = r.Message(now)
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := d.w.WriteMessages(d.ctx, msgs...)
		if err == nil {
			break
		}
		if d.ctx.Err() != nil {
			return true // abandoned: never acknowledged, consumed again after restart
		}
		d.m.DLQWriteErrors.Inc()
		if d.failing.CompareAndSwap(false, true) || attempt%20 == 0 {
			d.log.Error().Err(err).Int("records", len(msgs)).Int("attempt", attempt).
				Msg("dead-letter write failed; retrying, source partitions do not advance meanwhile")
		}
		t := time.NewTimer(backoff)
		select {
		case <-d.ctx.Done():
			t.Stop()
			return true
		case <-t.C:
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	if d.failing.CompareAndSwap(true, false) {
		d.log.Info().Msg("dead-letter writes recovered")
	}
	for _, r := range batch {
		d.m.DLQEvents.WithLabelValues(r.Reason).Inc()
		if r.Done != nil {
			r.Done()
		}
	}
	return true
}
