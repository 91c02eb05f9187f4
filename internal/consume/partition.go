package consume

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/deliver"
	"github.com/ampstream/ampstream/internal/dlq"
	"github.com/ampstream/ampstream/internal/event"
	"github.com/ampstream/ampstream/internal/fetch"
	"github.com/ampstream/ampstream/internal/group"
	"github.com/ampstream/ampstream/internal/prefetch"
	"github.com/ampstream/ampstream/internal/route"
)

// HeaderLane is the message header that forces a lane: "batch" or "realtime".
const HeaderLane = "amplitude-api"

// partition is one owned partition, from its assignment until it is
// revoked or lost, whatever generations pass meanwhile. It is the Owner of
// the items it submits.
type partition struct {
	c     *Consumer
	topic string
	id    int
	label string // partition number as a label value
	// idPrefix is what the stable insert_ids of its messages begin with.
	idPrefix []byte

	acks *acks
	// hwm is written per fetched message and read per commit tick: an
	// atomic, on its own cache line away from revoked (read per event by
	// delivery), rather than a field under mu.
	hwm     atomic.Int64
	_       [56]byte
	revoked atomic.Bool

	// ctx ends fetching (stop); lost and deadline say how the partition
	// lets go, and done is closed once it is released.
	ctx      context.Context
	cancel   context.CancelFunc
	lost     bool      // written before cancel, read after ctx is done
	deadline time.Time // of the drain and final commit; likewise
	done     chan struct{}

	mu            sync.Mutex
	released      bool  // its metric series are deleted; never set them again
	committed     int64 // last committed offset; -1 none
	lastSubmitted int64 // last watermark handed to a commit
}

// message is an in-flight event: its delivery item and what a dead letter
// needs of the Kafka message. Every event has one, in its chunk's array, so
// it keeps only that, not the whole kafka.Message, and its item has no time
// of its own (SubmitBatch takes the chunk's): 256 bytes instead of 352,
// and a chunk's 64 fill a 16 KiB size class exactly.
// TestMessageFitsItsSizeClass keeps it there.
type message struct {
	item    deliver.Item
	key     []byte
	value   []byte // as consumed; item.Raw may be a rewritten copy (prepare)
	headers []kafka.Header
	offset  int64
}

// kafkaMessage is what the dead-letter writer takes. It has no timestamp:
// the dead letter is stamped when written, so time-based retention keeps it
// as long as any new record.
func (p *partition) kafkaMessage(m *message) kafka.Message {
	return kafka.Message{Topic: p.topic, Partition: p.id, Offset: m.offset, Key: m.key, Value: m.value, Headers: m.headers}
}

var _ deliver.Owner = (*partition)(nil)

func (p *partition) Accepted(items []*deliver.Item) {
	// One acks lock and one budget release for the whole request's share.
	n, size := p.acks.resolveAll(items)
	if n > 0 {
		p.c.budget.releaseN(n, size)
	}
}

func (p *partition) Rejected(it *deliver.Item, reason, detail string) {
	m := it.Ref.(*message)
	p.deadLetter(m, it.Seq, reason, detail)
}

func (p *partition) Revoked() bool { return p.revoked.Load() }

// setRaw sets the event the item sends: the message's value, which gets a
// stable insert_id when it has none.
func (p *partition) setRaw(it *deliver.Item, f *event.Fields, msg *kafka.Message) {
	it.Raw = msg.Value
	if len(f.InsertID) > 0 {
		return
	}
	if open, comma := event.InsertIDAt(msg.Value); open == 0 && comma && !f.HasInsertIDKey {
		// The request gets the id (AppendInsertIDHead), not a copy.
		it.NoInsertID = true
		return
	}
	// An "insert_id":null member to leave out, whitespace before the
	// brace, or no member: a copy with the id.
	it.Raw = f.WithStableInsertID(msg.Value, p.topic, p.id, msg.Offset)
}

// AppendInsertIDHead appends the head that gives the item's event its
// stable insert_id, event.StableInsertID of its topic, partition and offset.
func (p *partition) AppendInsertIDHead(dst []byte, it *deliver.Item) []byte {
	return event.AppendInsertIDHead(dst, p.idPrefix, it.Ref.(*message).offset)
}

func (p *partition) resolve(seq uint64) {
	// A late answer after the partition was released finds its entry gone
	// (releaseAll): its offset is no longer ours and its budget was returned.
	if size, ok := p.acks.resolve(seq); ok {
		p.c.budget.release(size)
	}
}

func (p *partition) deadLetter(m *message, seq uint64, reason, detail string) {
	p.c.dlq.Write(dlq.Record{
		Msg:    p.kafkaMessage(m),
		Reason: reason,
		Detail: detail,
		Done:   func() { p.resolve(seq) },
	})
}

// newPartition registers a partition handed to this member; offset is its
// committed offset, -1 when none.
func (c *Consumer) newPartition(topic string, id int, offset int64) *partition {
	p := &partition{
		c: c, topic: topic, id: id, label: strconv.Itoa(id),
		idPrefix:  event.AppendStableInsertIDPrefix(nil, topic, id),
		committed: offset, lastSubmitted: offset,
		done: make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.hwm.Store(-1)
	// Until the first fetch resolves FirstOffset/LastOffset, the watermark is
	// the assigned offset; a negative one is never committed (see toCommit).
	p.acks = newAcks(offset, c.opts.PartitionMaxInflightEvents)
	c.statusMu.Lock()
	c.parts[partKey{topic, id}] = p
	c.statusMu.Unlock()
	return p
}

// stop ends the partition's fetching. A revoked partition then drains until
// deadline and commits; a lost one lets go at once.
func (p *partition) stop(lost bool, deadline time.Time) {
	p.lost, p.deadline = lost, deadline
	if lost {
		// Delivery drops what it still holds of a lost partition.
		p.revoked.Store(true)
	}
	p.cancel()
}

// finalCommitMin is the least time a revoked partition's final commit may
// retry when its drain used up the whole DrainTimeout.
const finalCommitMin = 5 * time.Second

// runPartition is the partition's owned goroutine: it fetches until the
// partition is stopped, then drains, commits and releases it.
func (c *Consumer) runPartition(p *partition, offset int64) {
	defer close(p.done)
	log := c.log.With().Str("topic", p.topic).Int("partition", p.id).Logger()
	start := offset
	if start < 0 {
		start = c.opts.StartOffset
	}
	// -1 until something is committed: 0 is a valid offset, and kafka-go's
	// FirstOffset sentinel (-2) means nothing to an operator.
	c.m.CommittedOffset.WithLabelValues(p.topic, p.label).Set(float64(max(offset, -1)))

	log.Info().Int64("offset", offset).Msg("partition assigned")

	c.fetchLoop(p.ctx, p, start, log)
	// Fetching ends early only when delivery is shut: the partition is
	// still owned, and waits to be revoked (stop sets lost and deadline).
	<-p.ctx.Done()

	drained := false
	if !p.lost {
		// Drain: fetching has stopped; wait for what is in flight.
		drained = p.drain(time.Until(p.deadline))
		// The final commit retries through coordinator moves until the
		// drain deadline, and for at least finalCommitMin.
		deadline := p.deadline
		if least := time.Now().Add(finalCommitMin); deadline.Before(least) {
			deadline = least
		}
		p.finalCommit(deadline, log)
		p.revoked.Store(true)
	}
	// Return the budget held by events that will now never be resolved here.
	unresolved, bytes := p.acks.releaseAll()
	c.budget.releaseN(unresolved, bytes)
	c.statusMu.Lock()
	if c.parts[partKey{p.topic, p.id}] == p {
		delete(c.parts, partKey{p.topic, p.id})
	}
	c.statusMu.Unlock()
	// Under p.mu, so a commit tick that raced with the release cannot
	// recreate the series afterwards.
	p.mu.Lock()
	p.released = true
	c.m.DeletePartition(p.topic, p.id)
	p.mu.Unlock()
	ev := log.Info()
	if !drained {
		ev = log.Warn()
	}
	ev.Bool("drained", drained).Bool("lost", p.lost).Int("unresolved", unresolved).Msg("partition released")
}

func (c *Consumer) fetchLoop(ctx context.Context, p *partition, start int64, log zerolog.Logger) {
	// Sampled: a broker restart makes every partition report the same
	// connection error each second until it is back.
	flog := log.Sample(&zerolog.BurstSampler{Burst: 3, Period: time.Minute})
	var keyBuf []byte
	beat, failures := 0, 0
	// Consumed events are counted per fetch response, not per event (one
	// shared atomic add per event from every partition goroutine): the
	// count is added before each fetch, before waiting for in-flight room
	// and at least every 256 events.
	consumed := 0
	flush := func() {
		if consumed > 0 {
			c.m.EventsConsumed.Add(float64(consumed))
			consumed = 0
		}
	}
	defer flush()
	f := fetch.New(fetch.Config{
		Dialer: c.opts.Dialer, Brokers: c.opts.Brokers, Topic: p.topic, Partition: p.id, Offset: start,
		MaxBytes: c.opts.FetchMaxBytes, MaxWait: c.opts.FetchMaxWait, Log: flog,
		ReadCommitted: c.opts.ReadCommitted,
		BeforeFetch: func(pos fetch.Position) {
			flush()
			if pos.AbortedRecords > 0 {
				c.m.AbortedSkipped.Add(float64(pos.AbortedRecords))
			}
			// Between fetches every message Fill returned is in the acks:
			// the offsets up to Next that are not hold nothing to deliver.
			if pos.HighWaterMark >= 0 {
				p.setHWM(pos.HighWaterMark)
			}
			if pos.Next >= 0 {
				p.acks.skipTo(pos.Next)
			}
		},
	})
	defer f.Close()
	// A chunk never exceeds the in-flight caps, which a chunk is let past
	// only when nothing else is in flight: with tiny caps they stay exact.
	chunk := fetchChunk
	for _, limit := range []int{c.opts.PartitionMaxInflightEvents, c.opts.MaxInflightEvents} {
		if limit > 0 {
			chunk = min(chunk, limit)
		}
	}
	msgs := make([]kafka.Message, 0, chunk)
	items := make([]*deliver.Item, 0, chunk)
	// The blocks (big record batches) the fetcher may still return messages
	// of, with its hold on their budget bytes: let go of once it has read
	// past them (fetch.Fetcher.Reading), and when fetching stops.
	var reading []heldBlock
	letGo := func(keep *fetch.Block) {
		k := 0
		for _, h := range reading {
			if h.src == keep {
				reading[k] = h
				k++
			} else if n := p.acks.dropBlock(h.mem); n > 0 {
				c.budget.releaseN(0, n)
			}
		}
		clear(reading[k:])
		reading = reading[:k]
	}
	defer letGo(nil)
	for {
		var now time.Time
		var err error
		msgs, now, err = f.Fill(ctx, msgs[:0], chunk)
		if err != nil {
			letGo(f.Reading())
			if ctx.Err() != nil {
				return
			}
			// 100 ms, 200 ms, … 1.6 s: a leadership move is over at once,
			// a restarting broker takes seconds.
			wait := 100 * time.Millisecond << min(failures, 4)
			failures++
			flog.Warn().Err(err).Dur("retry_in", wait).Msg("fetch failed; reconnecting")
			if !sleepCtx(ctx, wait) {
				return
			}
			continue
		}
		failures = 0
		if beat += len(msgs); beat >= 256 {
			c.heartbeat() // liveness needs seconds, not nanoseconds, of resolution
			flush()
			beat = 0
		}
		consumed += len(msgs)
		p.setHWM(msgs[len(msgs)-1].HighWaterMark)

		// Room for the chunk: in-flight cap, then budget, each taken once.
		// The chunk holds its messages and its copies of keys and values;
		// a big batch's block is counted whole, once, with the first chunk
		// that has events in it.
		total, fresh, i := 0, 0, 0
		for _, sp := range f.Spans() {
			if sp.Block == nil {
				for _, m := range msgs[i : i+sp.N] {
					total += len(m.Value) + len(m.Key)
				}
			} else if heldMem(reading, sp.Block) == nil {
				fresh += sp.Block.Size
			}
			i += sp.N
		}
		total += len(msgs) * eventOverhead
		if !p.acks.room(len(msgs)) {
			c.m.FetchBlocked.Inc()
			flush()
			if !p.waitRoom(ctx, len(msgs)) {
				return // not added: never committed, redelivered
			}
		}
		if waited, err := c.budget.acquireN(ctx, len(msgs), total+fresh); err != nil {
			return
		} else if waited {
			c.m.FetchBlocked.Inc()
		}
		var blocks []*blockMem
		for _, sp := range f.Spans() {
			if sp.Block == nil {
				continue
			}
			b := heldMem(reading, sp.Block)
			if b == nil {
				b = &blockMem{refs: 1, bytes: sp.Block.Size} // the fetcher's hold
				reading = append(reading, heldBlock{src: sp.Block, mem: b})
			}
			blocks = append(blocks, b)
		}
		seq := p.acks.addChunk(msgs, total, blocks)
		// After the chunk took its holds: the blocks the fetcher has read
		// past are the chunks' alone.
		letGo(f.Reading())

		// One allocation for the chunk's messages, as the fetcher makes one
		// per record batch for their keys and values: the chunk holds its
		// budget bytes until its last event is resolved (acks.chunkMem).
		ms := make([]message, len(msgs))
		items = items[:0]
		for i := range msgs {
			if j := i + prepareAhead; j < len(msgs) {
				// A big batch's events are parsed where the socket's read
				// put them (fetch.Block), no longer warm from a copy.
				prefetch.Bytes(msgs[j].Value)
			}
			if it := p.prepare(&ms[i], &msgs[i], seq+uint64(i), now, &keyBuf); it != nil {
				items = append(items, it)
			}
		}
		clear(msgs) // the messages live on in their items; drop the chunk's references
		if len(items) == 0 {
			continue
		}
		if unhanded, err := c.deliv.SubmitBatch(ctx, items, now); err != nil {
			for _, it := range unhanded {
				p.acks.abandon(it.Seq)
			}
			clear(items)
			return
		}
		clear(items)
	}
}

// heldBlock is a block the fetcher may still return messages of, and its
// budget bytes.
type heldBlock struct {
	src *fetch.Block
	mem *blockMem
}

// heldMem returns the memory of b if it is among the blocks of reading.
func heldMem(reading []heldBlock, b *fetch.Block) *blockMem {
	for _, h := range reading {
		if h.src == b {
			return h.mem
		}
	}
	return nil
}

// eventOverhead is what an in-flight event holds beyond its key and value,
// counted against the byte budget: its message (the delivery item and what
// a dead letter needs, in its chunk's array) and its acks entry, rounded up
// for the slice headers that point at it and its share of the chunk's
// chunkMem. An event without an insert_id gets it as its request is
// written (deliver.Item.NoInsertID), and holds nothing more; one with an
// "insert_id" key whose value is not a string (null) holds a rewritten
// copy of its value, which is not counted.
const eventOverhead = int(unsafe.Sizeof(message{})) + 64

// prepareAhead is how many events ahead of the one prepared its chunk's
// values are prefetched: 1, 2 and 4 measured alike.
const prepareAhead = 2

// fetchChunk is how many messages of a fetch response the partition
// goroutine takes at once: the in-flight cap, the budget and the acks are
// settled once per chunk, and each shard gets its share in one handoff.
// A chunk never waits for the broker (fetch.Fill), so it adds no latency.
const fetchChunk = 64

// prepare turns a fetched message into an item for delivery, or
// dead-letters it (and returns nil) when it is not a valid event.
func (p *partition) prepare(m *message, msg *kafka.Message, seq uint64, now time.Time, keyBuf *[]byte) *deliver.Item {
	c := p.c
	m.key, m.value, m.headers, m.offset = msg.Key, msg.Value, msg.Headers, msg.Offset
	it := &m.item
	it.Ref, it.Owner, it.Seq = m, p, seq

	f, perr := event.Parse(msg.Value)
	if perr == nil {
		perr = f.Validate(c.opts.MinIDLength)
	}
	if perr != nil {
		p.deadLetter(m, seq, string(event.ReasonOf(perr)), perr.Error())
		return nil
	}
	p.setRaw(it, &f, msg)
	if len(f.DeviceID) > 0 {
		it.Key = f.DeviceID
	} else {
		*keyBuf = f.KeyBytes((*keyBuf)[:0])
		it.Key = append([]byte(nil), *keyBuf...)
	}
	it.DeviceID, it.UserID = f.DeviceID, f.UserID
	if f.HasTime {
		it.TimeMS = f.Time
	}
	for _, h := range msg.Headers {
		if h.Key == HeaderLane {
			it.Override = route.ParseLane(h.Value)
		}
	}
	// One clock read per chunk (the fetcher's): the lag check here, and the
	// rate tracker's second (SubmitBatch).
	if lt := c.opts.LagThreshold; lt > 0 && now.Sub(msg.Time) > lt {
		it.Lagging = true
	}
	return it
}

// waitRoom waits until n more events fit under the partition's in-flight
// cap, or ctx ends.
func (p *partition) waitRoom(ctx context.Context, n int) bool {
	for !p.acks.room(n) {
		select {
		case <-ctx.Done():
			return false
		case <-p.acks.space:
		}
	}
	return true
}

// drain waits until every submitted event is resolved or the timeout passes.
func (p *partition) drain(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for p.acks.pending() > 0 {
		select {
		case <-p.acks.idle:
		case <-t.C:
			return p.acks.pending() == 0
		}
	}
	return true
}

// toCommit returns the watermark if it moved since the last commit.
func (p *partition) toCommit() (int64, bool) {
	wm, _ := p.acks.watermark()
	p.mu.Lock()
	defer p.mu.Unlock()
	if wm < 0 || wm == p.lastSubmitted {
		return 0, false
	}
	return wm, true
}

func (p *partition) committedOK(off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastSubmitted, p.committed = off, off
	hwm := p.hwm.Load()
	if p.released {
		return
	}
	m := p.c.m
	m.CommittedOffset.WithLabelValues(p.topic, p.label).Set(float64(off))
	m.LastCommitTS.WithLabelValues(p.topic, p.label).Set(float64(time.Now().UnixNano()) / 1e9)
	if hwm >= 0 {
		m.Lag.WithLabelValues(p.topic, p.label).Set(float64(max(hwm-off, 0)))
	}
}

// finalCommit commits the watermark of a revoked partition through the
// group member, which retries it on the new coordinator if the
// coordinator moves, until deadline. It runs before the member rejoins, so
// the partition's next owner starts from it.
func (p *partition) finalCommit(deadline time.Time, log zerolog.Logger) {
	p.c.commitMu.Lock()
	defer p.c.commitMu.Unlock()
	off, ok := p.toCommit()
	if !ok {
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	err := p.c.member.Load().Commit(ctx, map[group.TopicPartition]int64{{Topic: p.topic, Partition: p.id}: off})
	if err != nil {
		p.c.m.Commits.WithLabelValues("error").Inc()
		log.Warn().Err(err).Int64("offset", off).Msg("final offset commit failed; the next owner starts from the previous commit")
		return
	}
	p.c.m.Commits.WithLabelValues("success").Inc()
	p.committedOK(off)
	log.Info().Int64("offset", off).Msg("final offset committed")
}

func (p *partition) setHWM(h int64) {
	if p.hwm.Load() != h {
		p.hwm.Store(h)
	}
}

// updateLag refreshes the lag-in-seconds gauges: now minus the Kafka
// timestamp of the oldest unresolved event, 0 when nothing is pending.
func (p *partition) updateLag() {
	_, oldest := p.acks.watermark()
	m := p.c.m
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return
	}
	if oldest == 0 {
		m.LagSeconds.WithLabelValues(p.topic, p.label).Set(0)
		m.OldestUnackedTS.WithLabelValues(p.topic, p.label).Set(0)
	} else {
		m.LagSeconds.WithLabelValues(p.topic, p.label).Set(max(float64(time.Now().UnixMilli()-oldest)/1000, 0))
		m.OldestUnackedTS.WithLabelValues(p.topic, p.label).Set(float64(oldest) / 1000)
	}
	hwm, committed := p.hwm.Load(), p.committed
	if hwm >= 0 {
		m.HighWatermark.WithLabelValues(p.topic, p.label).Set(float64(hwm))
		if committed >= 0 {
			m.Lag.WithLabelValues(p.topic, p.label).Set(float64(max(hwm-committed, 0)))
		}
	}
}

func (p *partition) status() PartitionStatus {
	_, oldest := p.acks.watermark()
	p.mu.Lock()
	defer p.mu.Unlock()
	hwm := p.hwm.Load()
	s := PartitionStatus{Topic: p.topic, Partition: p.id, Committed: p.committed, HighWatermark: hwm, Inflight: p.acks.pending()}
	if hwm >= 0 && p.committed >= 0 {
		s.Lag = max(hwm-p.committed, 0)
	}
	if oldest > 0 {
		s.LagSeconds = float64(time.Now().UnixMilli()-oldest) / 1000
	}
	return s
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
