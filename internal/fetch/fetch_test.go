package fetch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ampstream/ampstream/internal/kafkatest"
)

func newTestFetcher(c *kafkatest.Cluster, topic string, offset int64, maxBytes int) *Fetcher {
	return New(Config{
		Dialer: &kafka.Dialer{Timeout: 10 * time.Second}, Brokers: c.Brokers, Topic: topic,
		Offset: offset, MaxBytes: maxBytes, MaxWait: 200 * time.Millisecond, Log: zerolog.Nop(),
	})
}

func produceN(t *testing.T, c *kafkatest.Cluster, topic string, from, n int) {
	t.Helper()
	msgs := make([]kafka.Message, 0, n)
	for i := from; i < from+n; i++ {
		msgs = append(msgs, kafka.Message{Key: []byte("k"), Value: []byte(fmt.Sprintf(`{"n":%d}`, i))})
	}
	for len(msgs) > 0 {
		k := min(len(msgs), 200)
		c.ProduceToPartition(t, topic, 0, msgs[:k]...)
		msgs = msgs[k:]
	}
}

// startTopic starts a broker with a one-partition topic holding n messages
// (produceN) and returns them with the context the test reads under.
func startTopic(t *testing.T, n int) (*kafkatest.Cluster, string, context.Context) {
	t.Helper()
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "fetch", 1)
	produceN(t, c, topic, 0, n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c, topic, ctx
}

// readN reads n messages and checks they are offsets from, from+1, … with
// the values produceN wrote.
func readN(t *testing.T, ctx context.Context, f *Fetcher, from int64, n int) {
	t.Helper()
	for i := range int64(n) {
		msg, at, err := f.Next(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", from+i, err)
		}
		if msg.Offset != from+i || string(msg.Value) != fmt.Sprintf(`{"n":%d}`, from+i) {
			t.Fatalf("got offset %d value %s, want offset %d", msg.Offset, msg.Value, from+i)
		}
		if msg.Topic != f.cfg.Topic || msg.Partition != 0 || msg.HighWaterMark < msg.Offset+1 {
			t.Fatalf("message %d: topic %q partition %d hwm %d", from+i, msg.Topic, msg.Partition, msg.HighWaterMark)
		}
		if at.IsZero() || time.Since(at) > time.Minute {
			t.Fatalf("message %d: read time %v", from+i, at)
		}
	}
}

func TestFetcherReadsEveryOffsetInOrderAcrossFetches(t *testing.T) {
	c, topic, ctx := startTopic(t, 3000)

	// 4 KiB per fetch: many fetches, each ending mid-record-batch.
	f := newTestFetcher(c, topic, kafka.FirstOffset, 4<<10)
	defer f.Close()
	readN(t, ctx, f, 0, 3000)

	// Caught up: more data produced later arrives on the same connection.
	produceN(t, c, topic, 3000, 10)
	readN(t, ctx, f, 3000, 10)
	if f.dials != 1 {
		t.Fatalf("dialled %d times, want 1", f.dials)
	}
}

func TestFetcherStartsAtTheGivenOffset(t *testing.T) {
	c, topic, ctx := startTopic(t, 100)

	f := newTestFetcher(c, topic, 57, 1<<20)
	readN(t, ctx, f, 57, 43)
	f.Close()

	// LastOffset starts after what exists when it connects.
	f = newTestFetcher(c, topic, kafka.LastOffset, 1<<20)
	defer f.Close()
	if err := f.connect(ctx); err != nil {
		t.Fatal(err)
	}
	produceN(t, c, topic, 100, 1)
	readN(t, ctx, f, 100, 1)
}

func TestFetcherResumesAfterAPauseLongerThanItsReadTimeout(t *testing.T) {
	c, topic, ctx := startTopic(t, 500)

	f := newTestFetcher(c, topic, 0, 1<<20)
	f.cfg.ReadTimeout = 200 * time.Millisecond
	defer f.Close()
	readN(t, ctx, f, 0, 10)
	// A consumer held back by its in-flight budget, mid-response: the
	// deadline is re-armed before the next read, nothing is skipped or
	// read twice.
	time.Sleep(3 * f.cfg.ReadTimeout)
	readN(t, ctx, f, 10, 490)
}

func TestFetcherReturnsPromptlyWhenCancelledWhileWaiting(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "fetch", 1)
	produceN(t, c, topic, 0, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newTestFetcher(c, topic, 0, 1<<20)
	f.cfg.MaxWait = 30 * time.Second // the broker holds an empty fetch this long
	fetching := make(chan struct{}, 2)
	f.cfg.BeforeFetch = func(Position) {
		select {
		case fetching <- struct{}{}:
		default: // never block the fetcher
		}
	}
	defer f.Close()
	readN(t, ctx, f, 0, 1) // connected, and at the end of the partition
	<-fetching

	done := make(chan error, 1)
	go func() {
		_, _, err := f.Next(ctx)
		done <- err
	}()
	<-fetching // the empty fetch is being sent: cancel while it waits
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("next returned no error after cancel on an empty partition")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("next still blocked 5 s after cancel (the broker wait is 30 s)")
	}
}

func TestFetcherReportsAnUnreachableBrokerAndRecovers(t *testing.T) {
	c, topic, ctx := startTopic(t, 5)

	f := New(Config{
		Dialer: &kafka.Dialer{Timeout: time.Second}, Brokers: []string{"127.0.0.1:1"}, // nothing listens there
		Topic: topic, Offset: 0, MaxWait: 200 * time.Millisecond, Log: zerolog.Nop(),
	})
	if _, _, err := f.Next(ctx); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("next with no reachable broker: %v, want a dial error", err)
	}
	// The first broker of the list is down, the second is up.
	f.cfg.Brokers = append(f.cfg.Brokers, c.Brokers...)
	defer f.Close()
	readN(t, ctx, f, 0, 5)
}

func TestFetcherPastTheLogEndReportsItAndReadsOnceTheLogGetsThere(t *testing.T) {
	c, topic, ctx := startTopic(t, 10)

	// A committed offset beyond the log's end (a topic recreated under a
	// group, an unclean leader election): an error, never a silent jump.
	f := newTestFetcher(c, topic, 20, 1<<20)
	defer f.Close()
	var errs []error
	for range 3 {
		_, _, err := f.Next(ctx)
		if err == nil {
			t.Fatal("Next at offset 20 of a 10-message log returned a message")
		}
		if errs = append(errs, err); strings.Contains(err.Error(), "past the log end 10") {
			break
		}
	}
	if last := errs[len(errs)-1]; !strings.Contains(last.Error(), "past the log end 10") {
		t.Fatalf("Next at offset 20 of a 10-message log: %v, want a past-the-log-end error", errs)
	}
	// Once the log reaches the offset, reading resumes exactly there.
	produceN(t, c, topic, 10, 15)
	readN(t, ctx, f, 20, 5)
}

func TestFetcherBelowTheLogStartSkipsToItWithAWarning(t *testing.T) {
	c, topic, ctx := startTopic(t, 30)
	deleteRecordsBefore(t, ctx, c, topic, 12) // what retention does to a slow consumer

	var logged strings.Builder
	f := newTestFetcher(c, topic, 5, 1<<20)
	f.cfg.Log = zerolog.New(&logged)
	defer f.Close()
	// The first fetch may be answered OFFSET_OUT_OF_RANGE (an error to
	// retry); the next call moves to the log start.
	msg, _, err := f.Next(ctx)
	if err != nil {
		msg, _, err = f.Next(ctx)
	}
	if err != nil || msg.Offset != 12 {
		t.Fatalf("first message after the log start moved to 12: offset %d, %v", msg.Offset, err)
	}
	readN(t, ctx, f, 13, 17)
	if !strings.Contains(logged.String(), `"skipped":7`) {
		t.Fatalf("no warning naming the 7 skipped offsets: %s", logged.String())
	}
}

// deleteRecordsBefore moves the log start of partition 0 to offset, with
// franz-go's client: kafka-go has no DeleteRecords.
func deleteRecordsBefore(t *testing.T, ctx context.Context, c *kafkatest.Cluster, topic string, offset int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = 0, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10_000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}
	for _, tp := range resp.Topics {
		for _, p := range tp.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				t.Fatalf("DeleteRecords %s/%d: %v", tp.Topic, p.Partition, err)
			}
		}
	}
}

func TestFillReadsChunksInOrderWithoutWaitingForTheNextFetch(t *testing.T) {
	c, topic, ctx := startTopic(t, 1000)

	fetches := 0
	f := newTestFetcher(c, topic, kafka.FirstOffset, 1<<10)
	f.cfg.BeforeFetch = func(Position) { fetches++ }
	defer f.Close()
	var msgs, all []kafka.Message
	next := int64(0)
	for next < 1000 {
		before := fetches
		var err error
		msgs, _, err = f.Fill(ctx, msgs[:0], 64)
		if err != nil {
			t.Fatalf("at offset %d: %v", next, err)
		}
		if len(msgs) == 0 || len(msgs) > 64 {
			t.Fatalf("at offset %d: a chunk of %d messages", next, len(msgs))
		}
		if fetches > before+1 {
			t.Fatalf("at offset %d: one chunk took %d fetches; a chunk never spans responses", next, fetches-before)
		}
		for _, m := range msgs {
			if m.Offset != next || string(m.Value) != fmt.Sprintf(`{"n":%d}`, next) {
				t.Fatalf("got offset %d value %s, want offset %d", m.Offset, m.Value, next)
			}
			next++
		}
		all = append(all, msgs...)
	}
	// What Fill returned is the caller's: later reads, which reuse the
	// connection's buffer, leave it alone.
	for i, m := range all {
		if m.Offset != int64(i) || string(m.Value) != fmt.Sprintf(`{"n":%d}`, i) || string(m.Key) != "k" {
			t.Fatalf("message %d changed after later reads: offset %d key %q value %q", i, m.Offset, m.Key, m.Value)
		}
	}
	// 1 KiB fetches get one record batch (200 records) each: five
	// responses, and chunks end where they do.
	if fetches < 5 {
		t.Fatalf("%d fetches for 1000 messages in five record batches", fetches)
	}
	// Caught up: the next Fill waits for the broker, then returns new data.
	go func() { produceN(t, c, topic, 1000, 3) }()
	msgs, _, err := f.Fill(ctx, msgs[:0], 64)
	if err != nil || len(msgs) == 0 || msgs[0].Offset != 1000 {
		t.Fatalf("after catching up: %d messages, err %v", len(msgs), err)
	}
}

func TestFetcherDialsThroughTheConfiguredDialFunc(t *testing.T) {
	c, topic, ctx := startTopic(t, 500)

	dials := 0
	d := &kafka.Dialer{Timeout: 10 * time.Second, DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials++
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	f := New(Config{Dialer: d, Brokers: c.Brokers, Topic: topic, Offset: kafka.FirstOffset, MaxWait: 200 * time.Millisecond, Log: zerolog.Nop()})
	defer f.Close()
	readN(t, ctx, f, 0, 500) // through the read buffer, in order
	if dials == 0 {
		t.Fatal("the Dialer's DialFunc was bypassed")
	}
	if f.cfg.Dialer == d {
		t.Fatal("the Fetcher uses the caller's Dialer instead of its buffered copy")
	}
}

// produceWith writes records to partition 0 with franz-go's client, which
// compresses and runs transactions as the Java client does.
func produceWith(t *testing.T, ctx context.Context, c *kafkatest.Cluster, topic string, opts []kgo.Opt, recs ...*kgo.Record) {
	t.Helper()
	opts = append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(50 * time.Millisecond)}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func TestFetcherDecodesEveryCompressionCodec(t *testing.T) {
	codecs := map[string]kgo.CompressionCodec{
		"gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
		"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
	}
	c := kafkatest.Start(t)
	for name, codec := range codecs {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			topic := c.CreateTopic(t, "fetch-"+name, 1)
			var recs []*kgo.Record
			for i := range 500 {
				r := &kgo.Record{Key: []byte(fmt.Sprintf("device-%d", i%7)), Value: []byte(fmt.Sprintf(`{"n":%d}`, i))}
				if i%3 == 0 {
					r.Headers = []kgo.RecordHeader{{Key: "ampstream-lane", Value: []byte("batch")}, {Key: "n", Value: []byte(fmt.Sprint(i))}}
				}
				recs = append(recs, r)
			}
			produceWith(t, ctx, c, topic, []kgo.Opt{kgo.ProducerBatchCompression(codec)}, recs...)

			// 4 KiB fetches: responses end mid-batch, and batches start
			// before the offset fetched.
			f := newTestFetcher(c, topic, kafka.FirstOffset, 4<<10)
			defer f.Close()
			var all []kafka.Message
			for i := range 500 {
				msg, _, err := f.Next(ctx)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				all = append(all, msg)
				if msg.Offset != int64(i) || string(msg.Key) != fmt.Sprintf("device-%d", i%7) || string(msg.Value) != fmt.Sprintf(`{"n":%d}`, i) {
					t.Fatalf("message %d: offset %d key %q value %q", i, msg.Offset, msg.Key, msg.Value)
				}
				wantHeaders := 0
				if i%3 == 0 {
					wantHeaders = 2
				}
				if len(msg.Headers) != wantHeaders || (wantHeaders > 0 && (msg.Headers[0].Key != "ampstream-lane" ||
					string(msg.Headers[0].Value) != "batch" || string(msg.Headers[1].Value) != fmt.Sprint(i))) {
					t.Fatalf("message %d: headers %v", i, msg.Headers)
				}
			}
			if cap(f.unz) == 0 {
				t.Fatal("no record batch was compressed")
			}
			// Decompressed into a buffer the next batch reuses: what Next
			// returned must not share it.
			for i, m := range all {
				if string(m.Key) != fmt.Sprintf("device-%d", i%7) || string(m.Value) != fmt.Sprintf(`{"n":%d}`, i) {
					t.Fatalf("message %d changed after later reads: key %q value %q", i, m.Key, m.Value)
				}
			}
		})
	}
}

// waitLogEnd waits until partition 0 of topic ends at offset end. Apache
// Kafka's coordinator writes a transaction's markers after EndTransaction
// has returned, so a test that counts them, or writes after them, polls.
func waitLogEnd(t *testing.T, c *kafkatest.Cluster, topic string, end int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for got := c.EndOffsets(t, topic)[0]; got != end; got = c.EndOffsets(t, topic)[0] {
		if got > end || time.Now().After(deadline) {
			t.Fatalf("log end %d, want %d", got, end)
		}
		time.Sleep(20 * time.Millisecond) // polled: nothing signals the marker's write
	}
}

func TestFetcherPassesTransactionMarkers(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "fetch-txn", 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cl := c.TransactionalClient(t, topic, "fetch-txn", kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprintf(`{"n":%d}`, i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	// Offsets 0–2 are the records, 3 the commit marker.
	waitLogEnd(t, c, topic, 4)
	produceWith(t, ctx, c, topic, nil, &kgo.Record{Value: []byte(`{"n":4}`)}, &kgo.Record{Value: []byte(`{"n":5}`)})

	f := newTestFetcher(c, topic, kafka.FirstOffset, 1<<20)
	defer f.Close()
	var got []int64
	for len(got) < 5 {
		msg, _, err := f.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(msg.Value) != fmt.Sprintf(`{"n":%d}`, msg.Offset) {
			t.Fatalf("offset %d holds %q", msg.Offset, msg.Value)
		}
		got = append(got, msg.Offset)
	}
	if fmt.Sprint(got) != "[0 1 2 4 5]" || f.offset != 6 {
		t.Fatalf("read offsets %v, next %d; want [0 1 2 4 5], next 6", got, f.offset)
	}
}

// TestFetcherReadCommittedSkipsAbortedTransactions interleaves two
// transactional producers batch by batch, aborts one and commits the other,
// and reads the partition both ways: read committed returns exactly the
// committed transaction's records and the plain ones, read uncommitted all
// of them. Either way the position reported before the next fetch is the
// log end, past the final transaction marker.
func TestFetcherReadCommittedSkipsAbortedTransactions(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "fetch-abort", 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	txn := func(name string, opts ...kgo.Opt) *kgo.Client {
		cl := c.TransactionalClient(t, topic, name, append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	// The aborted batches are compressed, and padded so they stay so:
	// read committed skips them without decompressing them.
	abort := txn("fetch-abort", kgo.ProducerBatchCompression(kgo.GzipCompression()))
	commit := txn("fetch-commit", kgo.ProducerBatchCompression(kgo.NoCompression()))
	const pad = ".............................................................................................."
	produce := func(cl *kgo.Client, v string) {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produceWith(t, ctx, c, topic, nil, &kgo.Record{Value: []byte("plain-0")})
	for i := range 3 { // one batch each, interleaved
		produce(abort, fmt.Sprintf("aborted-%d%s", i, pad))
		produce(commit, fmt.Sprintf("committed-%d", i))
	}
	if err := abort.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	produceWith(t, ctx, c, topic, nil, &kgo.Record{Value: []byte("plain-1")})
	if err := commit.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	const end = 10 // 1 + 6 records + 2 markers + 1
	waitLogEnd(t, c, topic, end)

	for _, tt := range []struct {
		committed bool
		want      string
	}{
		{true, "[plain-0 committed-0 committed-1 committed-2 plain-1]"},
		{false, "[plain-0 aborted-0 committed-0 aborted-1 committed-1 aborted-2 committed-2 plain-1]"},
	} {
		t.Run(fmt.Sprintf("read_committed=%v", tt.committed), func(t *testing.T) {
			f := newTestFetcher(c, topic, kafka.FirstOffset, 1<<20)
			f.cfg.ReadCommitted = tt.committed
			defer f.Close()
			rctx, stop := context.WithCancel(ctx)
			defer stop()
			var next, hwm int64 = -1, -1
			aborted, inflated := 0, 0
			f.cfg.BeforeFetch = func(p Position) {
				inflated = max(inflated, cap(f.unz)) // a response's decompression buffer, kept until the next
				aborted += p.AbortedRecords
				if next, hwm = p.Next, p.HighWaterMark; next == end {
					stop() // the position reached the log end: stop fetching
				}
			}
			var got []string
			for {
				msg, _, err := f.Next(rctx)
				if err != nil {
					if rctx.Err() == nil {
						t.Fatal(err)
					}
					break
				}
				got = append(got, strings.TrimRight(string(msg.Value), "."))
			}
			if fmt.Sprint(got) != tt.want {
				t.Fatalf("read %v, want %s", got, tt.want)
			}
			if next != end || hwm != end {
				t.Fatalf("position before the next fetch %d (hwm %d), want the log end %d", next, hwm, end)
			}
			// Three aborted batches of one record each.
			if want := map[bool]int{true: 3, false: 0}[tt.committed]; aborted != want {
				t.Fatalf("BeforeFetch reported %d aborted records skipped, want %d", aborted, want)
			}
			if (inflated > 0) == tt.committed {
				t.Fatalf("decompression buffer of %d bytes; want one only when the aborted batches are read", inflated)
			}
		})
	}
}

func TestFetcherReadsThroughKafkaGoInLegacyMode(t *testing.T) {
	c, topic, ctx := startTopic(t, 1000)
	for _, committed := range []bool{false, true} {
		t.Run(fmt.Sprintf("read_committed=%v", committed), func(t *testing.T) {
			f := newTestFetcher(c, topic, 10, 4<<10)
			f.cfg.ReadCommitted = committed
			f.legacy = true // as after a pre-0.11 record batch, or a broker without Fetch v4
			defer f.Close()
			readN(t, ctx, f, 10, 990)
			if f.version != 0 {
				t.Fatal("legacy mode negotiated a Fetch version of its own")
			}
		})
	}
}

// A record batch bigger than the connection's buffer is read into memory of
// its own, which its messages keep (a Block, named by Spans) instead of
// being copied out of it: the messages stay intact while later batches are
// read, each big batch has one Block whatever the chunks it is returned in,
// and Reading names it exactly while more of its messages may follow.
func TestBigRecordBatchesAreReadIntoBlocksTheirMessagesKeep(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "fetch-blocks", 1)
	pad := strings.Repeat("x", 400)
	value := func(i int) string { return fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, pad) }
	batch := func(from, n int) {
		msgs := make([]kafka.Message, 0, n)
		for i := from; i < from+n; i++ {
			msgs = append(msgs, kafka.Message{Key: []byte("k"), Value: []byte(value(i))})
		}
		c.ProduceToPartition(t, topic, 0, msgs...) // one record batch
	}
	// Small, big (about 600 KiB: more than the 256 KiB buffer), big, small.
	batch(0, 10)
	batch(10, 1500)
	batch(1510, 1500)
	batch(3010, 10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// From the middle of the first big batch: its earlier records are
	// skipped, and its Block still counts the whole batch.
	f := newTestFetcher(c, topic, 100, 4<<20)
	defer f.Close()
	var all []kafka.Message
	var blockOf []*Block
	var msgs []kafka.Message
	for len(all) < 2920 {
		var err error
		msgs, _, err = f.Fill(ctx, msgs[:0], 64)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(all), err)
		}
		n := 0
		for _, sp := range f.Spans() {
			for range sp.N {
				blockOf = append(blockOf, sp.Block)
			}
			n += sp.N
		}
		if n != len(msgs) {
			t.Fatalf("spans cover %d of %d messages", n, len(msgs))
		}
		all = append(all, msgs...)
		last := all[len(all)-1].Offset
		if r := f.Reading(); (last < 1509 || last >= 1510 && last < 3009) != (r != nil && r == blockOf[len(blockOf)-1]) {
			t.Fatalf("after offset %d: Reading = %p, last message's block %p", last, r, blockOf[len(blockOf)-1])
		}
	}
	for i, m := range all {
		off := 100 + i
		if m.Offset != int64(off) || string(m.Value) != value(off) || string(m.Key) != "k" {
			t.Fatalf("message %d: offset %d key %q value %.20q…, want offset %d", i, m.Offset, m.Key, m.Value, off)
		}
		var want *Block
		switch {
		case off < 1510:
			want = blockOf[0]
		case off < 3010:
			want = blockOf[1510-100]
		}
		if blockOf[i] != want {
			t.Fatalf("offset %d: block %p, want %p", off, blockOf[i], want)
		}
	}
	a, b := blockOf[0], blockOf[1510-100]
	if a == nil || b == nil || a == b {
		t.Fatalf("big batches' blocks: %p and %p, want two", a, b)
	}
	for _, blk := range []*Block{a, b} {
		if blk.Size < 1500*len(value(0)) || blk.Size > 1500*(len(value(0))+32)+128 {
			t.Fatalf("block of %d bytes for a batch of 1500 records of %d bytes", blk.Size, len(value(0)))
		}
	}
	if f.Reading() != nil {
		t.Fatalf("every batch read, and Reading = %p", f.Reading())
	}
}

// When the connection ends in the middle of a big batch, Reading names no
// block any more (the consumer lets go of the fetcher's hold), and the next
// Fill reads the batch again from the next offset into a new block: the
// messages already returned keep theirs, intact.
func TestABlockIsLetGoWhenTheConnectionEndsMidBatch(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "fetch-block-fail", 1)
	value := func(i int) string { return fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("y", 400)) }
	msgs := make([]kafka.Message, 0, 1500)
	for i := range 1500 {
		msgs = append(msgs, kafka.Message{Value: []byte(value(i))})
	}
	c.ProduceToPartition(t, topic, 0, msgs...) // one record batch of about 600 KiB
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	f := newTestFetcher(c, topic, kafka.FirstOffset, 4<<20)
	defer f.Close()
	first, _, err := f.Fill(ctx, nil, 64)
	if err != nil || len(first) != 64 {
		t.Fatalf("first chunk: %d messages, %v", len(first), err)
	}
	blk := f.Reading()
	if blk == nil || len(f.Spans()) != 1 || f.Spans()[0].Block != blk {
		t.Fatalf("first chunk: Reading %p, Spans %+v; want one span of the block being read", blk, f.Spans())
	}
	f.Close() // the connection ends mid-batch, as after a broker restart
	if f.Reading() != nil {
		t.Fatalf("after the connection ended, Reading = %p", f.Reading())
	}
	rest, _, err := f.Fill(ctx, nil, 64)
	if err != nil || len(rest) == 0 || rest[0].Offset != 64 {
		t.Fatalf("after reconnecting: %d messages (%v), %v; want them from offset 64", len(rest), rest, err)
	}
	if again := f.Spans()[0].Block; again == nil || again == blk {
		t.Fatalf("the batch read again: block %p, the first one %p; want a new one", again, blk)
	}
	for i, m := range append(first, rest...) {
		if string(m.Value) != value(i) {
			t.Fatalf("message %d: %.30q…", i, m.Value)
		}
	}
}
