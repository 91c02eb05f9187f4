package fetch

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
)

// Fetcher reads one partition from its leader, one fetch at a time, in the
// calling goroutine (see the package doc). It is not safe for concurrent
// use.
//
// Reading through a Conn, not kafka-go's Reader, is the cheaper path: the
// Reader hands every message over a channel from a goroutine of its own,
// re-arms the connection's read deadline and updates its statistics per
// message, and prefetches outside the consumer's in-flight budget; its
// Batch allocates a key and a value per record, read through two buffers
// and a callback each. The benchmark's Conn baseline measures this path
// (make bench).
//
// Deadlines: a fetch must be answered within maxWait (the broker's wait)
// plus readTimeout, and each further read of its response within
// readTimeout of the last refresh. The deadline is refreshed only when it
// is close (a runtime timer update per message is what the Reader pays), so
// a consumer that pauses (backpressure) between two messages of a response
// resumes reading it instead of timing out and fetching it again.
//
// Errors: a leader that moved or failed is followed inside Fill (package
// doc, Leaders); other errors close the connection and are returned, and
// the next call reconnects to the leader from the next offset.
type Fetcher struct {
	cfg Config

	offset   int64 // next offset to read; kafka.FirstOffset/LastOffset until resolved
	conn     *kafka.Conn
	raw      *bufConn    // conn's socket (under kafka-go's Conn): fetches go here
	stop     func() bool // unregisters the close-on-cancel hook of conn
	deadline time.Time   // read deadline currently set on conn
	dials    int
	// checkRange: the broker answered OFFSET_OUT_OF_RANGE; the next
	// connection reads the log's range before fetching.
	checkRange bool
	err        error // met by Fill after it had read messages: the next call returns it

	// Fetches decoded here (wire.go).
	version  int16 // Fetch version of the connection
	corr     int32 // correlation id of the last request
	wbuf     []byte
	resp     response // the response being read, when active
	active   bool
	recLeft  int   // bytes of the partition's record batches not read yet
	hwm      int64 // the response's high watermark
	gotBatch bool  // the response had a whole record batch
	bt       batch // the record batch being decoded
	scratch  []byte
	unz      []byte
	// Read committed: the response's aborted transactions by first
	// offset, how many of them the batches read so far have reached, and
	// the producers whose transaction is aborted at the current batch.
	aborted     []abortedTxn
	abortedAt   int
	abortedPIDs map[int64]struct{}
	skippedRecs int // records of aborted transactions skipped since the last BeforeFetch
	spans       []Span

	// legacy: fetches go through kafka-go's Batch (a pre-0.11 message
	// format was met, or the broker has no Fetch v4).
	legacy bool
	batch  *kafka.Batch

	// The partition's leader (leader.go).
	leader   leader    // the connection's: its epoch goes into every fetch
	known    []string  // the cluster's brokers, from the last metadata
	metaAddr string    // the broker that answered the last metadata request
	meta     *metaConn // open while connect looks for the leader
	gone     time.Time // when the leader failed; zero while fetching works
	left     leader    // the leader that failed
	why      error     // how it failed
	looked   time.Time // the last metadata lookup
	// followFor bounds following (leaderWait; shorter in tests).
	followFor time.Duration
}

// Config configures a Fetcher.
type Config struct {
	Dialer    *kafka.Dialer
	Brokers   []string
	Topic     string
	Partition int
	// Offset is the first offset to read, or kafka.FirstOffset or
	// kafka.LastOffset (resolved when the Fetcher first connects).
	Offset   int64
	MinBytes int // 0 means 1
	MaxBytes int // per fetch; 0 means 10 MiB
	// MaxWait is how long the broker may hold a fetch for MinBytes; 0
	// means 2 s. The read deadline of a fetch is MaxWait + ReadTimeout.
	MaxWait     time.Duration
	ReadTimeout time.Duration // 0 means 10 s
	Log         zerolog.Logger
	// ReadCommitted hides the records of aborted transactions, and those of
	// open ones until they commit (Kafka's isolation.level=read_committed,
	// librdkafka's default). Without it every record is read, as by
	// kafka-go and the Java consumer's default.
	ReadCommitted bool
	// BeforeFetch, when set, runs before each fetch request, which may wait
	// up to MaxWait for data: the caller flushes what it batches per
	// response.
	BeforeFetch func(Position)
}

// Position is what BeforeFetch learns of the partition before a fetch.
type Position struct {
	// Next is the offset the fetch asks for: every offset below it was
	// returned by Fill or holds no record to deliver (a transaction marker,
	// an aborted transaction's record, a compacted record).
	Next int64
	// HighWaterMark is the partition's in the last response, -1 before one.
	HighWaterMark int64
	// AbortedRecords counts the records of aborted transactions skipped
	// since the last BeforeFetch (ReadCommitted).
	AbortedRecords int
}

// New returns a Fetcher; it connects on the first Next.
func New(cfg Config) *Fetcher {
	if cfg.MinBytes <= 0 {
		cfg.MinBytes = 1
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 10 << 20
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 2 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.Dialer == nil {
		cfg.Dialer = kafka.DefaultDialer
	}
	none := leader{broker: kafka.Broker{ID: -1}, epoch: -1}
	f := &Fetcher{cfg: cfg, offset: cfg.Offset, hwm: -1, leader: none, left: none, followFor: leaderWait}
	f.cfg.Dialer = bufferedDialer(cfg.Dialer)
	return f
}

// Next returns the next message and the time it was read at: one clock
// reading per message, which the caller reuses (the rate tracker's second,
// the lag check) instead of reading the clock again. It returns an error
// when ctx ends or the connection failed; the caller decides how long to
// wait before calling again.
func (f *Fetcher) Next(ctx context.Context) (kafka.Message, time.Time, error) {
	var one [1]kafka.Message
	msgs, now, err := f.Fill(ctx, one[:0], 1)
	if err != nil {
		return kafka.Message{}, now, err
	}
	return msgs[0], now, nil
}

// Fill appends to dst up to n messages (n ≥ 1) and returns it with the time
// they were read at: one clock reading for the lot, which the caller reuses
// (the rate tracker's second, the lag check). It fetches only when the
// current response is used up and nothing was read yet, so it never waits
// for the broker while holding messages: what it returns was already
// arriving. It returns at least one message, or an error when ctx ends,
// when no leader could be read from for leaderWait, or on an error that is
// not the leader's moving or failing (the messages read before an error
// are returned first, the error on the next call); the caller decides how
// long to wait before calling again.
func (f *Fetcher) Fill(ctx context.Context, dst []kafka.Message, n int) ([]kafka.Message, time.Time, error) {
	now := time.Now()
	f.spans = f.spans[:0]
	if err := f.err; err != nil {
		f.err = nil
		return dst, now, err
	}
	start := len(dst)
	for {
		if f.active || f.batch != nil {
			if now.After(f.deadline.Add(-f.cfg.ReadTimeout / 2)) {
				f.setDeadline(now.Add(f.cfg.ReadTimeout))
			}
			var err error
			if f.batch != nil {
				from := len(dst)
				dst, err = f.readLegacy(dst, start, n)
				f.span(len(dst)-from, nil)
			} else {
				dst, err = f.read(dst, start, n)
			}
			if err != nil {
				if len(dst) > start {
					f.err = err // after what was read
					return dst, now, nil
				}
				return dst, now, err
			}
			if len(dst) > start {
				// Reading from a response already being received takes
				// microseconds: now stands for the read time.
				return dst, now, nil
			}
			continue
		}
		if err := ctx.Err(); err != nil {
			return dst, now, err
		}
		if f.conn == nil {
			if err := f.connect(ctx); err != nil {
				return dst, now, err
			}
		}
		if f.cfg.BeforeFetch != nil {
			f.cfg.BeforeFetch(Position{Next: f.offset, HighWaterMark: f.hwm, AbortedRecords: f.skippedRecs})
			f.skippedRecs = 0
		}
		f.setDeadline(time.Now().Add(f.cfg.MaxWait + f.cfg.ReadTimeout))
		if f.legacy {
			// kafka-go bounds a read-committed fetch by the last stable
			// offset but does not skip aborted transactions: old-format
			// batches cannot be transactional, but newer ones after them
			// can (internal/consume/DESIGN.md, "legacy mode").
			f.batch = f.conn.ReadBatchWith(kafka.ReadBatchConfig{
				MinBytes:       f.cfg.MinBytes,
				MaxBytes:       f.cfg.MaxBytes,
				MaxWait:        f.cfg.MaxWait,
				IsolationLevel: f.isolation(),
			})
		} else if err := f.request(); err != nil {
			if err = f.fail(err); err != nil {
				return dst, time.Now(), err
			}
		}
		// The fetch may have waited up to maxWait for data: read the clock
		// again for its first message.
		now = time.Now()
	}
}

// read appends messages of the current response to dst until it holds n
// from start or the response is used up. A nil error with nothing added
// means: fetch again.
//
// Records are decoded as views of their batch (bt.next). A batch bigger
// than the connection's buffer was read into an allocation of its own (a
// Block), which its messages keep. Other batches are views of the
// connection's buffer, which the next read overwrites: before reading the
// next batch, and before returning, the views of the current one are
// copied into one allocation (own), so the keys and values of a chunk cost
// one allocation per batch instead of one per record. Either way the
// messages share memory, and the consumer accounts for it until the last
// of them is resolved (Spans; internal/consume, acks).
func (f *Fetcher) read(dst []kafka.Message, start, n int) ([]kafka.Message, error) {
	// dst[views:] are views of the records f.bt.all[from:to]: owned before
	// f.bt changes (the next batch, or fail, which resets it) and on return.
	views, from, to := len(dst), 0, 0
	ownViews := func() {
		if f.bt.block == nil {
			own(dst[views:], f.bt.all[from:to])
		}
		f.span(len(dst)-views, f.bt.block)
		views, from, to = len(dst), 0, 0
	}
	for len(dst)-start < n {
		if f.bt.count == 0 {
			if f.bt.end > f.offset {
				f.offset = f.bt.end // past compacted records and transaction markers
			}
			ownViews()
			f.bt = batch{}
			more, err := f.nextBatch()
			if err != nil {
				return dst, f.fail(err)
			}
			if !more {
				return dst, nil
			}
			continue
		}
		at := f.bt.pos()
		dst = append(dst, kafka.Message{})
		msg := &dst[len(dst)-1]
		if err := f.bt.next(msg); err != nil {
			dst = dst[:len(dst)-1]
			ownViews()
			return dst, f.fail(err)
		}
		if msg.Offset < f.offset {
			// A record batch may start before the offset asked for.
			dst = dst[:len(dst)-1]
			continue
		}
		if len(dst)-1 == views {
			from = at
		}
		to = f.bt.pos()
		msg.Topic, msg.Partition, msg.HighWaterMark = f.cfg.Topic, f.cfg.Partition, f.hwm
		f.offset = msg.Offset + 1
	}
	ownViews()
	if f.bt.count == 0 && f.bt.block != nil {
		// Read to its end: the block is its messages' alone (Reading no
		// longer names it), and must not stay reachable from here while
		// the caller waits before its next call.
		f.bt.all, f.bt.recs = nil, nil
	}
	return dst, nil
}

// Block is the memory of a record batch that messages Fill returned are
// views of: a batch bigger than the connection's buffer is read into an
// allocation of its own, and its records are not copied out of it. The
// messages keep all of it, whatever the offset the fetch started at,
// until the last of them is dropped.
type Block struct {
	Size int // bytes: the whole record batch
}

// Span describes N consecutive messages of those the last Fill returned:
// views of Block, or, when Block is nil, copies that share an allocation
// (one per record batch and Fill).
type Span struct {
	N     int
	Block *Block
}

// Spans describes the messages the last call to Fill returned, in order:
// their counts add up to how many it returned. Valid until the next call.
func (f *Fetcher) Spans() []Span { return f.spans }

// Reading returns the block of the record batch being read, of which later
// calls to Fill may return more messages, or nil. Once it no longer
// returns a block that Spans named, no later message is a view of it.
func (f *Fetcher) Reading() *Block {
	if f.bt.count > 0 {
		return f.bt.block
	}
	return nil
}

// span adds n messages of block to f.spans.
func (f *Fetcher) span(n int, block *Block) {
	if n == 0 {
		return
	}
	if k := len(f.spans) - 1; k >= 0 && f.spans[k].Block == block {
		f.spans[k].N += n
		return
	}
	f.spans = append(f.spans, Span{N: n, Block: block})
}

// own copies the keys and values of msgs, views of the records region of a
// record batch, into one new allocation and points msgs at it.
//
// Most often it copies region whole, framing included (a dozen bytes a
// record): one copy into memory not cleared first, where make clears it
// and then copies. Records whose headers or framing make region much
// larger than their keys and values are copied field by field, so the
// allocation stays what the consumer's budget counts, give or take
// ownSlack a record.
//
// The whole-region copy needs unsafe to find each field's offset in
// region. It and uncleared are kept for a measured end-to-end gain: with
// every region copied field by field and blocks from make, ampstream used
// 4.95 CPU s per million events against 4.11 (−17 % with them; medians of
// three alternating runs of
// `go run ./cmd/ampstream-bench --skip-emulator --skip-latency --skip-cost --skip-realtime --skip-baseline --pairs 1 --events 2000000`
// on a shared 2-core host).
func own(msgs []kafka.Message, region []byte) {
	n := 0
	for i := range msgs {
		n += len(msgs[i].Key) + len(msgs[i].Value)
	}
	if n == 0 {
		return
	}
	if len(region) <= n+ownSlack*len(msgs) {
		buf := append([]byte(nil), region...)
		base := uintptr(unsafe.Pointer(unsafe.SliceData(region)))
		at := func(b []byte) []byte {
			i := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) - base)
			return buf[i : i+len(b) : i+len(b)]
		}
		for i := range msgs {
			m := &msgs[i]
			if len(m.Key) > 0 {
				m.Key = at(m.Key)
			}
			if len(m.Value) > 0 {
				m.Value = at(m.Value)
			}
		}
		return
	}
	buf := make([]byte, 0, n)
	for i := range msgs {
		m := &msgs[i]
		if len(m.Key) > 0 {
			buf = append(buf, m.Key...)
			m.Key = buf[len(buf)-len(m.Key) : len(buf) : len(buf)]
		}
		if len(m.Value) > 0 {
			buf = append(buf, m.Value...)
			m.Value = buf[len(buf)-len(m.Value) : len(buf) : len(buf)]
		}
	}
}

// ownSlack is how many bytes of framing and headers a record may add to
// the region own copies whole.
const ownSlack = 32

// request sends a fetch from the next offset and reads its response up to
// the partition's record batches.
func (f *Fetcher) request() error {
	f.corr++
	f.wbuf = appendFetchRequest(f.wbuf[:0], f.version, f.corr, f.cfg.Dialer.ClientID, f.cfg.Topic,
		int32(f.cfg.Partition), f.leader.epoch, f.offset, f.cfg.MaxWait, int32(f.cfg.MinBytes), int32(f.cfg.MaxBytes), f.isolation())
	if _, err := f.raw.Write(f.wbuf); err != nil {
		return err
	}
	f.resp = response{r: f.raw.r}
	if err := f.readHead(); err != nil {
		return err
	}
	if !f.gone.IsZero() {
		f.followed()
	}
	return nil
}

// isolation is the isolation level of the Fetcher's requests, either way.
func (f *Fetcher) isolation() kafka.IsolationLevel {
	if f.cfg.ReadCommitted {
		return kafka.ReadCommitted
	}
	return kafka.ReadUncommitted
}

// readHead reads f.resp up to the partition's record batches and makes it
// the active response.
func (f *Fetcher) readHead() error {
	f.aborted, f.abortedAt = f.aborted[:0], 0
	clear(f.abortedPIDs)
	pd, err := readResponseHead(&f.resp, f.version, f.corr, f.cfg.Topic, int32(f.cfg.Partition), &f.aborted)
	if err != nil {
		return err
	}
	slices.SortFunc(f.aborted, func(a, b abortedTxn) int { return cmp.Compare(a.firstOffset, b.firstOffset) })
	f.active, f.hwm, f.recLeft, f.gotBatch = true, pd.hwm, pd.records, false
	return nil
}

// nextBatch reads the response's next record batch into f.bt, or ends the
// response and returns false.
func (f *Fetcher) nextBatch() (bool, error) {
	if f.recLeft < batchHeaderSize {
		return false, f.endResponse()
	}
	h, err := f.resp.bytes(batchHeaderSize)
	if err != nil {
		return false, err
	}
	base := int64(binary.BigEndian.Uint64(h))
	size := int(int32(binary.BigEndian.Uint32(h[8:])))
	f.recLeft -= batchHeaderSize
	switch {
	case size < 0 || size > maxBatch:
		return false, fmt.Errorf("record batch at offset %d: length %d", base, size)
	case size > f.recLeft && f.gotBatch:
		// The broker cut the response at its size limit, mid-batch: the
		// next fetch starts at that batch.
		return false, f.endResponse()
	case size > f.recLeft:
		return false, fmt.Errorf("record batch at offset %d (%d bytes) is larger than the fetch size (%d bytes), and the broker cut it", base, size+batchHeaderSize, f.cfg.MaxBytes)
	}
	// An uncompressed batch bigger than the connection's buffer is read
	// from the socket into memory of its own (one copy where the buffer
	// would make two), which its records keep (Block) instead of being
	// copied out of it. Within the fetch size, it is allocated at once; a
	// batch past it (a broker returns the first batch whole, whatever the
	// size asked) grows as its bytes arrive, so a corrupt length allocates
	// little.
	buf := &f.scratch
	var block []byte
	if size > f.resp.r.Size() && f.uncompressed() {
		if size <= f.cfg.MaxBytes {
			block = uncleared(size)
		}
		buf = &block
	}
	b, err := f.resp.view(size, buf)
	if err != nil {
		return false, err
	}
	f.recLeft -= size
	f.bt, err = parseBatchHead(base, b)
	if err != nil {
		return false, err
	}
	if f.cfg.ReadCommitted && len(f.aborted) > 0 && f.bt.producerID >= 0 {
		f.skipAborted() // before decompressing: an aborted batch is skipped whole
	}
	if f.bt.count > 0 {
		if err := f.bt.inflate(&f.unz); err != nil {
			return false, err
		}
	}
	f.gotBatch = true
	if block != nil && f.bt.codec == nil && f.bt.count > 0 {
		f.bt.block = &Block{Size: cap(block)}
	}
	return true, nil
}

// uncleared returns an empty slice of capacity n whose memory, unlike
// make's, is not cleared first: the read that fills it overwrites it, and
// only what it read is ever looked at. strings.Builder.Grow allocates that
// way (the runtime's MakeNoZero); its first byte gives the address.
func uncleared(n int) []byte {
	var sb strings.Builder
	sb.Grow(n)
	sb.WriteByte(0)
	return unsafe.Slice(unsafe.StringData(sb.String()), n)[:0:n]
}

// uncompressed reports whether the record batch whose length was just read
// is not compressed, from its attributes (after its leader epoch, magic and
// CRC); false when they cannot be read.
func (f *Fetcher) uncompressed() bool {
	if f.resp.left < 11 {
		return false
	}
	h, err := f.resp.r.Peek(11)
	return err == nil && h[4] == 2 && h[10]&attrCodec == 0
}

// skipAborted applies read committed to the batch just parsed, as the Java
// consumer does: an aborted transaction of the response that began at or
// before the batch's last offset makes its producer's transactional batches
// aborted from there on, until that producer's abort marker. A skipped
// batch's offsets are passed over like a transaction marker's.
func (f *Fetcher) skipAborted() {
	bt := &f.bt
	for ; f.abortedAt < len(f.aborted) && f.aborted[f.abortedAt].firstOffset < bt.end; f.abortedAt++ {
		if f.abortedPIDs == nil {
			f.abortedPIDs = make(map[int64]struct{})
		}
		f.abortedPIDs[f.aborted[f.abortedAt].producerID] = struct{}{}
	}
	if bt.control {
		if bt.abortMarker {
			delete(f.abortedPIDs, bt.producerID)
		}
		return
	}
	if _, ok := f.abortedPIDs[bt.producerID]; ok && bt.transactional {
		f.skippedRecs += bt.count
		bt.count, bt.recs = 0, nil
	}
}

// endResponse discards what is left of the response (a batch the broker
// cut, other partitions).
func (f *Fetcher) endResponse() error {
	f.active = false
	f.recLeft = 0
	if !f.gotBatch || cap(f.scratch) > maxScratch {
		f.scratch = nil
	}
	if !f.gotBatch || cap(f.unz) > maxScratch {
		f.unz = nil
	}
	return f.resp.skip(f.resp.left)
}

// fail ends the connection after err and decides what happens next: nil to
// fetch again, or the error to return.
func (f *Fetcher) fail(err error) error {
	f.Close()
	switch {
	case errors.Is(err, errLegacy):
		// From here on kafka-go reads this partition, from the next offset.
		f.cfg.Log.Info().Int64("offset", f.offset).
			Msg("pre-0.11 message format in the partition: reading it through kafka-go from here on")
		f.legacy = true
		return nil
	case leaderFailed(err):
		// The next connect finds the leader that replaced this one.
		f.follow(f.leader, err)
		return nil
	case errors.Is(err, kafka.OffsetOutOfRange):
		// The log's range is read on a fresh connection: after this error
		// kafka-go's Conn was seen failing the next request on kfake.
		f.checkRange = true
	}
	f.gone = time.Time{} // the leader answered: not a leader to follow
	return err
}

// readLegacy is read through kafka-go's Batch.
func (f *Fetcher) readLegacy(dst []kafka.Message, start, n int) ([]kafka.Message, error) {
	for len(dst)-start < n {
		msg, err := f.batch.ReadMessage()
		if err != nil {
			return dst, f.endBatch(err)
		}
		f.offset = msg.Offset + 1
		dst = append(dst, msg)
	}
	return dst, nil
}

func (f *Fetcher) setDeadline(t time.Time) {
	f.deadline = t
	if f.legacy {
		_ = f.conn.SetReadDeadline(t) // never fails
		return
	}
	_ = f.raw.SetDeadline(t)
}

// endBatch closes the current batch after ReadMessage returned err and
// decides what happens next: nil to fetch again, or the error to return.
func (f *Fetcher) endBatch(err error) error {
	f.hwm = f.batch.HighWaterMark()
	cerr := f.batch.Close()
	f.batch = nil
	if errors.Is(err, io.EOF) {
		if cerr == nil {
			if !f.gone.IsZero() {
				f.followed()
			}
			// The response is consumed. The Conn knows the next offset, which
			// may lie past the last message read (a batch ending in compacted
			// records).
			if off, _ := f.conn.Offset(); off > f.offset {
				f.offset = off
			}
			return nil
		}
		err = cerr
	}
	if errors.Is(err, kafka.RequestTimedOut) {
		return nil // the broker's wait ran out: fetch again
	}
	return f.fail(err)
}

// connect connects to the partition's leader and positions the
// connection at the next offset. While following a leader that failed
// (follow), it asks for metadata every leaderPoll until it names the
// leader's replacement and connects to it, for up to leaderWait since the
// leader failed; otherwise it returns the first error.
func (f *Fetcher) connect(ctx context.Context) error {
	defer f.closeMeta()
	for {
		if !f.gone.IsZero() {
			if wait := time.Until(f.looked.Add(leaderPoll)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				}
			}
		}
		f.looked = time.Now()
		err := f.dial(ctx)
		if err == nil || f.gone.IsZero() || ctx.Err() != nil {
			return err
		}
		if since := time.Since(f.gone); since >= f.followFor {
			f.gone = time.Time{}
			return fmt.Errorf("no leader of %s/%d to fetch from %s after leader %d (epoch %d) failed: %w; last: %w",
				f.cfg.Topic, f.cfg.Partition, since.Round(time.Millisecond), f.left.broker.ID, f.left.epoch, f.why, err)
		}
	}
}

// dial looks the leader up, connects to it and positions the connection
// at the next offset. An error that leaderFailed recognises starts
// following the leader.
func (f *Fetcher) dial(ctx context.Context) error {
	l, err := f.lookup(ctx)
	if err != nil {
		if errors.Is(err, errNoLeader) {
			f.follow(f.leader, err)
		}
		return err
	}
	if !f.gone.IsZero() && !replaces(f.left, l, f.why) {
		return fmt.Errorf("metadata from %s still names leader %d (epoch %d) of %s/%d", f.metaAddr, l.broker.ID, l.epoch, f.cfg.Topic, f.cfg.Partition)
	}
	conn, raw, err := dialRaw(ctx, func(ctx context.Context) (*kafka.Conn, error) {
		return f.cfg.Dialer.DialPartition(ctx, "tcp", "", kafka.Partition{Topic: f.cfg.Topic, ID: f.cfg.Partition, Leader: l.broker})
	})
	if err == nil {
		f.dials++
		if err = f.position(conn); err == nil && !f.legacy {
			err = f.negotiate(conn)
		}
		if l.epoch < 0 && f.version >= 11 {
			// Without the epoch a v11 fetch (which names a rack) is
			// served by a former leader as by a follower, and one waiting
			// there is held until MaxWait (package doc, Leaders); v10 gets
			// NOT_LEADER_OR_FOLLOWER.
			f.version = 10
		}
		if err != nil {
			_ = conn.Close()
		}
	}
	if err != nil {
		if leaderFailed(err) {
			f.follow(l, err)
		}
		return fmt.Errorf("connect to the leader of %s/%d, broker %d at %s: %w", f.cfg.Topic, f.cfg.Partition, l.broker.ID, l.addr(), err)
	}
	f.conn, f.raw, f.leader = conn, raw, l
	f.stop = context.AfterFunc(ctx, func() { _ = conn.Close() })
	return nil
}

// negotiate picks the connection's Fetch version, or switches to kafka-go
// (legacy) when the broker has none this package speaks.
func (f *Fetcher) negotiate(conn *kafka.Conn) error {
	_ = conn.SetDeadline(time.Now().Add(f.cfg.ReadTimeout))
	defer conn.SetDeadline(time.Time{})
	versions, err := conn.ApiVersions()
	if err != nil {
		return fmt.Errorf("read the API versions of the leader of %s/%d: %w", f.cfg.Topic, f.cfg.Partition, err)
	}
	for _, v := range versions {
		if v.ApiKey == apiFetch && v.MaxVersion >= minFetchVersion && v.MinVersion <= maxFetchVersion {
			f.version = min(v.MaxVersion, maxFetchVersion)
			return nil
		}
	}
	f.cfg.Log.Info().Msg("the broker has no Fetch version 4 to 11: reading through kafka-go")
	f.legacy = true
	return nil
}

// position resolves a symbolic start offset, checks the offset against the
// log's range after an out-of-range answer, and seeks conn to it.
func (f *Fetcher) position(conn *kafka.Conn) error {
	if f.offset < 0 || f.checkRange {
		_ = conn.SetDeadline(time.Now().Add(f.cfg.ReadTimeout))
		first, last, err := conn.ReadOffsets()
		if err != nil {
			return fmt.Errorf("read the log range of %s/%d: %w", f.cfg.Topic, f.cfg.Partition, err)
		}
		switch {
		case f.offset == kafka.LastOffset:
			f.offset = last
		case f.offset < 0:
			f.offset = first
		case f.offset < first:
			f.cfg.Log.Warn().Int64("offset", f.offset).Int64("log_start", first).Int64("skipped", first-f.offset).
				Msg("offset below the log start (deleted by retention before it was consumed): continuing at the log start")
			f.offset = first
		case f.offset > last:
			return fmt.Errorf("offset %d of %s/%d is past the log end %d", f.offset, f.cfg.Topic, f.cfg.Partition, last)
		}
		f.checkRange = false
		_ = conn.SetDeadline(time.Time{})
	}
	_, err := conn.Seek(f.offset, kafka.SeekAbsolute|kafka.SeekDontCheck)
	return err
}

// Close drops the connection; a later Next reconnects.
func (f *Fetcher) Close() {
	f.closeMeta()
	f.active = false
	f.bt = batch{}
	f.raw = nil
	if f.batch != nil {
		_ = f.batch.Close()
		f.batch = nil
	}
	if f.conn != nil {
		f.stop()
		_ = f.conn.Close()
		f.conn = nil
	}
}
