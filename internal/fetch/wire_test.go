package fetch

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// encodeBatch encodes a magic-2 record batch as a broker stores it, with
// kmsg (franz-go's protocol package) and kafka-go's codecs, and returns it
// whole (base offset and length first).
func encodeBatch(t testing.TB, base int64, codec compress.Compression, attrs int16, baseTime int64, recs []kmsg.Record) []byte {
	t.Helper()
	var raw []byte
	last := int32(0)
	for i := range recs {
		r := recs[i]
		r.Length = 0
		n := len(r.AppendTo(nil)) - 1 // a zero length is one byte
		r.Length = int32(n)
		raw = r.AppendTo(raw)
		last = max(last, r.OffsetDelta)
	}
	if codec != compress.None {
		var buf bytes.Buffer
		w := codec.Codec().NewWriter(&buf)
		if _, err := w.Write(raw); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		raw = buf.Bytes()
	}
	rb := kmsg.RecordBatch{
		FirstOffset: base, Magic: 2, Attributes: attrs | int16(codec), LastOffsetDelta: last,
		FirstTimestamp: baseTime, MaxTimestamp: baseTime + 1000, ProducerID: -1, ProducerEpoch: -1,
		FirstSequence: -1, NumRecords: int32(len(recs)), Records: raw,
	}
	b := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-batchHeaderSize))
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
	return b
}

// decodeAll decodes every record of a whole batch.
func decodeAll(b []byte) ([]kafka.Message, batch, error) {
	var unz []byte
	bt, err := parseBatch(int64(binary.BigEndian.Uint64(b)), b[batchHeaderSize:], &unz)
	if err != nil {
		return nil, bt, err
	}
	var msgs []kafka.Message
	for bt.count > 0 {
		var m kafka.Message
		if err := bt.next(&m); err != nil {
			return msgs, bt, err
		}
		msgs = append(msgs, m)
	}
	return msgs, bt, nil
}

func testRecords() []kmsg.Record {
	return []kmsg.Record{
		{OffsetDelta: 0, Key: []byte("device-1"), Value: []byte(`{"event_type":"a"}`)},
		{OffsetDelta: 1, TimestampDelta64: 5, Key: nil, Value: []byte(`{"event_type":"b"}`)},
		{OffsetDelta: 2, TimestampDelta64: 7, Key: []byte("k"), Value: nil,
			Headers: []kmsg.Header{{Key: "ampstream-lane", Value: []byte("batch")}, {Key: "empty"}}},
		// Offset 3 compacted away; a long value needs a two-byte varint.
		{OffsetDelta: 4, TimestampDelta64: 300, Key: []byte("device-2"), Value: []byte(strings.Repeat("v", 1000))},
	}
}

func TestParseBatchDecodesEveryCodec(t *testing.T) {
	want := testRecords()
	for _, codec := range []compress.Compression{compress.None, compress.Gzip, compress.Snappy, compress.Lz4, compress.Zstd} {
		t.Run(codec.String(), func(t *testing.T) {
			b := encodeBatch(t, 1000, codec, 0, 1_700_000_000_000, want)
			msgs, bt, err := decodeAll(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != len(want) {
				t.Fatalf("%d records, want %d", len(msgs), len(want))
			}
			for i, m := range msgs {
				w := want[i]
				if m.Offset != 1000+int64(w.OffsetDelta) || !bytes.Equal(m.Key, w.Key) || !bytes.Equal(m.Value, w.Value) {
					t.Fatalf("record %d: offset %d key %q value %.20q", i, m.Offset, m.Key, m.Value)
				}
				if got := m.Time.UnixMilli(); got != 1_700_000_000_000+w.TimestampDelta64 {
					t.Fatalf("record %d: time %d", i, got)
				}
				if len(m.Headers) != len(w.Headers) {
					t.Fatalf("record %d: %d headers, want %d", i, len(m.Headers), len(w.Headers))
				}
				for j, h := range m.Headers {
					if h.Key != w.Headers[j].Key || !bytes.Equal(h.Value, w.Headers[j].Value) {
						t.Fatalf("record %d header %d: %q=%q", i, j, h.Key, h.Value)
					}
				}
				// The key cannot grow into the value: both are views of the batch.
				if len(m.Key) > 0 && cap(m.Key) != len(m.Key) {
					t.Fatalf("record %d: key capacity %d past its length %d", i, cap(m.Key), len(m.Key))
				}
			}
			if bt.end != 1005 {
				t.Fatalf("batch end %d, want 1005 (past the last offset delta)", bt.end)
			}
		})
	}
}

func TestOwnCopiesRecordsOutOfTheirBatch(t *testing.T) {
	after := func(b []byte) *byte { return (*byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(b)), len(b))) }
	for _, tc := range []struct {
		name      string
		headerLen int
		whole     bool // the region is copied whole, framing and headers too
	}{
		{"small headers", 5, true},
		{"big headers", 200, false}, // more than ownSlack a record: keys and values only
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs := testRecords()
			recs[2].Headers[0].Value = bytes.Repeat([]byte("b"), tc.headerLen)
			b := encodeBatch(t, 0, compress.None, 0, 0, recs)
			msgs, bt, err := decodeAll(b)
			if err != nil {
				t.Fatal(err)
			}
			own(msgs, bt.all)
			clear(b) // the connection's buffer is reused for the next batch
			if string(msgs[0].Key) != "device-1" || string(msgs[0].Value) != `{"event_type":"a"}` ||
				string(msgs[1].Value) != `{"event_type":"b"}` || msgs[1].Key != nil ||
				string(msgs[2].Key) != "k" || msgs[2].Value != nil || len(msgs[2].Headers[0].Value) != tc.headerLen {
				t.Fatalf("owned records alias the input: %q %q", msgs[0].Key, msgs[0].Value)
			}
			// One allocation holds them all, and none can grow into the next.
			for i, m := range msgs {
				if cap(m.Key) != len(m.Key) || cap(m.Value) != len(m.Value) {
					t.Fatalf("record %d: key %d/%d value %d/%d (len/cap)", i, len(m.Key), cap(m.Key), len(m.Value), cap(m.Value))
				}
			}
			gap := int(uintptr(unsafe.Pointer(unsafe.SliceData(msgs[2].Key))) - uintptr(unsafe.Pointer(after(msgs[1].Value))))
			if tc.whole {
				// As in the batch: record 2's framing lies between.
				if gap <= 0 || gap > ownSlack {
					t.Fatalf("record 2's key starts %d bytes after record 1's value", gap)
				}
			} else if after(msgs[0].Key) != unsafe.SliceData(msgs[0].Value) || gap != 0 {
				t.Fatal("keys and values are not back to back in one allocation")
			}
		})
	}
}

func TestParseBatchLogAppendTimeAndControlBatches(t *testing.T) {
	b := encodeBatch(t, 10, compress.None, attrLogAppend, 5000, testRecords()[:2])
	msgs, _, err := decodeAll(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Time.UnixMilli() != 6000 { // the batch's max timestamp, the broker's
			t.Fatalf("log-append time %d, want 6000", m.Time.UnixMilli())
		}
	}

	// A batch whose last records were compacted away ends past its last
	// record: the next fetch starts after the batch, not inside it.
	b = encodeBatch(t, 30, compress.None, 0, 0, testRecords()[:2])
	binary.BigEndian.PutUint32(b[23:], 9) // last offset delta 9, last record at delta 1
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
	msgs, bt, err := decodeAll(b)
	if err != nil || len(msgs) != 2 || msgs[1].Offset != 31 || bt.end != 40 {
		t.Fatalf("compacted tail: %d records, last at %d, end %d, err %v; want 2, 31, 40", len(msgs), msgs[len(msgs)-1].Offset, bt.end, err)
	}

	// A transaction marker: no records, but its offset is passed.
	b = encodeBatch(t, 20, compress.None, attrControl, 0, []kmsg.Record{{Key: []byte{0, 0, 0, 1}, Value: []byte{0, 0, 0, 0, 0, 0}}})
	msgs, bt, err = decodeAll(b)
	if err != nil || len(msgs) != 0 || bt.end != 21 {
		t.Fatalf("control batch: %d records, end %d, err %v; want none, 21", len(msgs), bt.end, err)
	}
}

func TestParseBatchRejectsCorruptInput(t *testing.T) {
	good := encodeBatch(t, 0, compress.None, 0, 0, testRecords())
	withCRC := func(b []byte) []byte {
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
		return b
	}
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"flipped byte", func() []byte { b := bytes.Clone(good); b[len(b)-3] ^= 1; return b }(), "CRC mismatch"},
		{"magic 1", func() []byte { b := bytes.Clone(good); b[16] = 1; return b }(), errLegacy.Error()},
		{"short", good[:batchHeaderSize+20], "bytes"},
		{"records cut", withCRC(bytes.Clone(good[:len(good)-10])), "corrupt record"},
		{"more records than bytes", func() []byte {
			b := bytes.Clone(good)
			binary.BigEndian.PutUint32(b[57:], 9)
			return withCRC(b)
		}(), "corrupt record"},
		{"unknown codec", func() []byte {
			b := bytes.Clone(good)
			b[22] |= 7
			return withCRC(b)
		}(), "compression codec"},
		{"gzip garbage", func() []byte {
			b := bytes.Clone(good)
			b[22] |= byte(compress.Gzip)
			return withCRC(b)
		}(), "gzip"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := decodeAll(c.b)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want one containing %q", err, c.want)
			}
		})
	}
}

// FuzzRecordBatch feeds arbitrary bytes to the record-batch decoder: it
// returns an error or records whose bytes come from the input, and never
// panics or allocates past the input's size.
func FuzzRecordBatch(f *testing.F) {
	for _, codec := range []compress.Compression{compress.None, compress.Gzip, compress.Snappy} {
		f.Add(encodeBatch(f, 7, codec, 0, 1, testRecords()))
	}
	f.Add(encodeBatch(f, 0, compress.None, attrControl, 0, testRecords()[:1]))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < batchHeaderSize {
			return
		}
		// The CRC is recomputed so the fuzzer gets past it to the records.
		if len(b) >= 21 {
			binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
		}
		msgs, _, err := decodeAll(b)
		if err != nil {
			return
		}
		total := 0
		for _, m := range msgs {
			total += len(m.Key) + len(m.Value)
		}
		if b[22]&attrCodec == 0 && total > len(b) {
			t.Fatalf("%d bytes of keys and values from %d bytes of input", total, len(b))
		}
	})
}

func TestFetchRequestEncodesEveryVersion(t *testing.T) {
	for v := int16(minFetchVersion); v <= maxFetchVersion; v++ {
		iso := kafka.IsolationLevel(v % 2) // both levels over the versions
		b := appendFetchRequest(nil, v, 42, "client", "events", 3, 17, 12345, 250*time.Millisecond, 1, 10<<20, iso)
		if got := int(binary.BigEndian.Uint32(b)); got != len(b)-4 {
			t.Fatalf("v%d: size %d, want %d", v, got, len(b)-4)
		}
		h := b[4:]
		if key, ver, id := binary.BigEndian.Uint16(h), int16(binary.BigEndian.Uint16(h[2:])), binary.BigEndian.Uint32(h[4:]); key != apiFetch || ver != v || id != 42 {
			t.Fatalf("v%d: header key %d version %d id %d", v, key, ver, id)
		}
		body := h[8+2+len("client"):]
		req := kmsg.NewFetchRequest()
		req.Version = v
		if err := req.ReadFrom(body); err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		if req.ReplicaID != -1 || req.MaxWaitMillis != 250 || req.MinBytes != 1 || req.MaxBytes != 10<<20 || req.IsolationLevel != int8(iso) {
			t.Fatalf("v%d: %+v", v, req)
		}
		if len(req.Topics) != 1 || req.Topics[0].Topic != "events" || len(req.Topics[0].Partitions) != 1 {
			t.Fatalf("v%d: topics %+v", v, req.Topics)
		}
		p := req.Topics[0].Partitions[0]
		if p.Partition != 3 || p.FetchOffset != 12345 || p.PartitionMaxBytes != 10<<20 {
			t.Fatalf("v%d: partition %+v", v, p)
		}
		if v >= 7 && (req.SessionID != 0 || req.SessionEpoch != -1) {
			t.Fatalf("v%d: session %d epoch %d, want a sessionless fetch", v, req.SessionID, req.SessionEpoch)
		}
		// KIP-320: from v9 the partition's current leader epoch, between
		// the partition and the fetch offset, which kmsg checks by
		// decoding the offset after it.
		if v >= 9 && p.CurrentLeaderEpoch != 17 {
			t.Fatalf("v%d: leader epoch %d, want 17", v, p.CurrentLeaderEpoch)
		}
		if v < 9 && p.CurrentLeaderEpoch != -1 { // kmsg's default: not on the wire
			t.Fatalf("v%d: leader epoch %d on a version without one", v, p.CurrentLeaderEpoch)
		}
		// And byte for byte: past the size and the version, v9 is v8 plus
		// the four bytes of the epoch.
		if v == 9 {
			v8 := appendFetchRequest(nil, 8, 42, "client", "events", 3, 17, 12345, 250*time.Millisecond, 1, 10<<20, iso)
			at := len(v8) - 4 - 8 - 8 - 4 // before the offset, log start offset, partition max bytes, forgotten topics
			if binary.BigEndian.Uint32(b[at:]) != 17 || !bytes.Equal(b[4:6], v8[4:6]) || !bytes.Equal(b[at+4:], v8[at:]) || !bytes.Equal(b[8:at], v8[8:at]) {
				t.Fatalf("v9 is not v8 with the epoch before the fetch offset:\nv8 %x\nv9 %x", v8, b)
			}
		}
	}
}

// fetchResponse encodes a Fetch response with kmsg, size and correlation id
// first, as it comes off the connection.
func fetchResponse(version int16, id int32, code int16, topics ...kmsg.FetchResponseTopic) []byte {
	resp := kmsg.NewFetchResponse()
	resp.Version = version
	resp.ErrorCode = code
	resp.Topics = topics
	body := resp.AppendTo(nil)
	b := binary.BigEndian.AppendUint32(nil, uint32(len(body)+4))
	b = binary.BigEndian.AppendUint32(b, uint32(id))
	return append(b, body...)
}

func fetchPartition(id int32, code int16, hwm int64, records []byte) kmsg.FetchResponseTopicPartition {
	p := kmsg.NewFetchResponseTopicPartition()
	p.Partition, p.ErrorCode, p.HighWatermark, p.RecordBatches = id, code, hwm, records
	// Aborted transactions named after the partition: only those of the
	// partition asked for are kept.
	p.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{
		{ProducerID: int64(id), FirstOffset: 2}, {ProducerID: int64(id) + 10, FirstOffset: 1},
	}
	return p
}

func TestReadResponseHead(t *testing.T) {
	records := encodeBatch(t, 0, compress.None, 0, 0, testRecords())
	ours := func(code int16) kmsg.FetchResponseTopic {
		return kmsg.FetchResponseTopic{Topic: "events", Partitions: []kmsg.FetchResponseTopicPartition{
			fetchPartition(2, 0, 99, []byte("not ours")), fetchPartition(3, code, 100, records),
		}}
	}
	other := kmsg.FetchResponseTopic{Topic: "event", Partitions: []kmsg.FetchResponseTopicPartition{fetchPartition(3, 0, 5, []byte("nor this"))}}
	for v := int16(minFetchVersion); v <= maxFetchVersion; v++ {
		cases := []struct {
			name string
			b    []byte
			err  error // nil: the records are found
			text string
		}{
			{"records", fetchResponse(v, 7, 0, other, ours(0)), nil, ""},
			{"partition error", fetchResponse(v, 7, 0, ours(int16(kafka.OffsetOutOfRange))), kafka.OffsetOutOfRange, ""},
			{"wrong request", fetchResponse(v, 8, 0, ours(0)), nil, "for request 8"},
			{"partition missing", fetchResponse(v, 7, 0, other), nil, "without events/3"},
			{"cut short", fetchResponse(v, 7, 0, ours(0))[:40], nil, "unexpected EOF"},
		}
		if v >= 7 {
			cases = append(cases, struct {
				name string
				b    []byte
				err  error
				text string
			}{"response error", fetchResponse(v, 7, int16(kafka.NotLeaderForPartition), ours(0)), kafka.NotLeaderForPartition, ""})
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("v%d/%s", v, c.name), func(t *testing.T) {
				r := &response{r: bufio.NewReader(bytes.NewReader(c.b))}
				var aborted []abortedTxn
				pd, err := readResponseHead(r, v, 7, "events", 3, &aborted)
				switch {
				case c.err != nil:
					if !errors.Is(err, c.err) {
						t.Fatalf("err %v, want %v", err, c.err)
					}
				case c.text != "":
					if err == nil || !strings.Contains(err.Error(), c.text) {
						t.Fatalf("err %v, want one containing %q", err, c.text)
					}
				default:
					if err != nil {
						t.Fatal(err)
					}
					if fmt.Sprint(aborted) != "[{3 2} {13 1}]" {
						t.Fatalf("aborted transactions %v, want partition 3's [{3 2} {13 1}]", aborted)
					}
					if pd.hwm != 100 || pd.records != len(records) || r.left != len(records) {
						t.Fatalf("hwm %d, %d bytes of records, %d left; want 100, %d, %d", pd.hwm, pd.records, r.left, len(records), len(records))
					}
					got := make([]byte, pd.records)
					if err := r.full(got); err != nil || !bytes.Equal(got, records) {
						t.Fatalf("records not next in the response (err %v)", err)
					}
				}
			})
		}
	}
}

func TestZigzagMatchesEncodingBinary(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 63, -64, 64, -65, 400, -400, 8191, -8192, 8192, -8193, 1 << 20, -(1 << 40), 1<<62 - 1} {
		b := binary.AppendVarint([]byte{0xff}, v) // at an offset, after a stray byte
		got, i := zigzag(b, 1)
		if got != v || i != len(b) {
			t.Fatalf("zigzag(%d) = %d at %d, want %d at %d", v, got, i, v, len(b))
		}
		if _, i := zigzag(b[:len(b)-1], 1); len(b) > 2 && i != -1 {
			t.Fatalf("zigzag(%d) cut short: index %d, want -1", v, i)
		}
	}
	if _, i := zigzag(nil, -1); i != -1 {
		t.Fatal("a failed index does not stay failed")
	}
}

// BenchmarkDecodeBatch decodes a record batch of 1000 ~400-byte events,
// as the benchmark's producer writes them: per record, the CPU and the one
// allocation (key and value together) the consumer pays.
func BenchmarkDecodeBatch(b *testing.B) {
	recs := make([]kmsg.Record, 1000)
	for i := range recs {
		recs[i] = kmsg.Record{OffsetDelta: int32(i), TimestampDelta64: int64(i / 10),
			Key: []byte(fmt.Sprintf("device-%08d", i)), Value: bytes.Repeat([]byte("x"), 400)}
	}
	for _, codec := range []compress.Compression{compress.None, compress.Gzip} {
		batch := encodeBatch(b, 0, codec, 0, 1_700_000_000_000, recs)
		b.Run(codec.String(), func(b *testing.B) {
			var unz []byte
			var m kafka.Message
			b.SetBytes(int64(len(recs)) * 420)
			b.ReportAllocs()
			for b.Loop() {
				bt, err := parseBatch(0, batch[batchHeaderSize:], &unz)
				if err != nil {
					b.Fatal(err)
				}
				for bt.count > 0 {
					if err := bt.next(&m); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
		})
	}
}

// FuzzFetchResponse feeds arbitrary bytes, read through a tiny buffer, to
// the response reader and the record-batch loop: they return an error or
// messages at strictly increasing offsets, and never panic or hang.
func FuzzFetchResponse(f *testing.F) {
	records := append(encodeBatch(f, 0, compress.None, 0, 1, testRecords()),
		encodeBatch(f, 5, compress.Gzip, 0, 1, testRecords()[:2])...)
	// Transactional batches and an abort marker: fetchPartition lists an
	// aborted transaction of producer 3 from offset 2.
	abortKey := []kmsg.Record{{Key: []byte{0, 0, 0, 0}}}
	records = append(records, withProducer(encodeBatch(f, 10, compress.None, attrTransactional, 1, testRecords()), 3)...)
	records = append(records, withProducer(encodeBatch(f, 20, compress.None, attrTransactional|attrControl, 1, abortKey), 3)...)
	topic := kmsg.FetchResponseTopic{Topic: "events", Partitions: []kmsg.FetchResponseTopicPartition{fetchPartition(3, 0, 10, records)}}
	for v := int16(minFetchVersion); v <= maxFetchVersion; v++ {
		f.Add(append([]byte{byte(v - minFetchVersion)}, fetchResponse(v, 7, 0, topic)...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		v := minFetchVersion + int16(data[0])%(maxFetchVersion-minFetchVersion+1)
		fe := &Fetcher{cfg: Config{Topic: "events", Partition: 3, Log: zerolog.Nop(), ReadCommitted: true}, version: v}
		// A 16-byte buffer: every batch goes through the scratch buffer.
		msgs, _ := readResponse(fe, data[1:], 16)
		for i, m := range msgs {
			if (i > 0 && m.Offset <= msgs[i-1].Offset) || m.Offset < 0 || fe.offset <= m.Offset {
				t.Fatalf("message %d at offset %d after %v, next offset %d", i, m.Offset, msgs[:i], fe.offset)
			}
		}
	})
}

func TestReadDecodesAResponseThroughAnyBuffer(t *testing.T) {
	records := append(encodeBatch(t, 0, compress.None, 0, 1, testRecords()),
		encodeBatch(t, 5, compress.Gzip, 0, 1, testRecords()[:2])...)
	topic := kmsg.FetchResponseTopic{Topic: "events", Partitions: []kmsg.FetchResponseTopicPartition{fetchPartition(3, 0, 10, records)}}
	for _, size := range []int{16, 4096} { // the scratch buffer, and views into the reader's
		fe := &Fetcher{cfg: Config{Topic: "events", Partition: 3, Log: zerolog.Nop()}, offset: 1, version: 11}
		msgs, err := readResponse(fe, fetchResponse(11, 7, 0, topic), size)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, m := range msgs {
			got = append(got, m.Offset)
			if m.HighWaterMark != 10 || m.Topic != "events" || m.Partition != 3 {
				t.Fatalf("offset %d: hwm %d topic %q partition %d", m.Offset, m.HighWaterMark, m.Topic, m.Partition)
			}
		}
		// Offset 0 is before the one asked for; 3 was compacted away.
		if fmt.Sprint(got) != "[1 2 4 5 6]" || fe.offset != 7 || fe.active || fe.resp.left != 0 {
			t.Fatalf("buffer %d: offsets %v, next %d, active %v, %d left", size, got, fe.offset, fe.active, fe.resp.left)
		}
	}
}

// A record batch whose CRC holds but whose records run out before its
// count: the records decoded before the corrupt one are returned, owned
// (the connection, and with it the batch's buffer, is gone), then the error.
func TestReadReturnsTheRecordsBeforeACorruptOne(t *testing.T) {
	b := encodeBatch(t, 0, compress.None, 0, 1, testRecords()[:2])
	binary.BigEndian.PutUint32(b[batchHeaderSize+45:], 3) // two records, counted three
	binary.BigEndian.PutUint32(b[batchHeaderSize+5:], crc32.Checksum(b[batchHeaderSize+9:], castagnoli))
	topic := kmsg.FetchResponseTopic{Topic: "events", Partitions: []kmsg.FetchResponseTopicPartition{fetchPartition(3, 0, 10, b)}}
	for _, size := range []int{16, 4096} {
		fe := &Fetcher{cfg: Config{Topic: "events", Partition: 3, Log: zerolog.Nop()}, version: 11}
		data := fetchResponse(11, 7, 0, topic)
		msgs, err := readResponse(fe, data, size)
		if err == nil || !strings.Contains(err.Error(), "corrupt record") {
			t.Fatalf("buffer %d: error %v, want a corrupt record", size, err)
		}
		clear(data)
		clear(fe.scratch)
		if len(msgs) != 2 || string(msgs[0].Key) != "device-1" || string(msgs[0].Value) != `{"event_type":"a"}` ||
			string(msgs[1].Value) != `{"event_type":"b"}` {
			t.Fatalf("buffer %d: %d messages before the corrupt record", size, len(msgs))
		}
	}
}

// TestParseBatchReadsTransactionFields checks what read committed needs of
// a batch header: its producer, whether it is transactional, and whether a
// control batch commits or aborts.
func TestParseBatchReadsTransactionFields(t *testing.T) {
	marker := func(typ int16) []kmsg.Record {
		key := binary.BigEndian.AppendUint16([]byte{0, 0}, uint16(typ))
		return []kmsg.Record{{Key: key, Value: []byte{0, 0, 0, 0, 0, 0}}}
	}
	for _, c := range []struct {
		name                   string
		attrs                  int16
		recs                   []kmsg.Record
		txn, control, abortMrk bool
	}{
		{"plain", 0, testRecords(), false, false, false},
		{"transactional", attrTransactional, testRecords(), true, false, false},
		{"abort marker", attrTransactional | attrControl, marker(0), true, true, true},
		{"commit marker", attrTransactional | attrControl, marker(1), true, true, false},
		{"marker without a key", attrTransactional | attrControl, []kmsg.Record{{}}, true, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := withProducer(encodeBatch(t, 40, compress.None, c.attrs, 0, c.recs), 77)
			var unz []byte
			bt, err := parseBatch(40, b[batchHeaderSize:], &unz)
			if err != nil {
				t.Fatal(err)
			}
			if bt.producerID != 77 || bt.transactional != c.txn || bt.control != c.control || bt.abortMarker != c.abortMrk {
				t.Fatalf("producer %d transactional %v control %v abort %v; want 77 %v %v %v",
					bt.producerID, bt.transactional, bt.control, bt.abortMarker, c.txn, c.control, c.abortMrk)
			}
			if c.control && bt.count != 0 {
				t.Fatalf("a control batch yields %d records", bt.count)
			}
		})
	}
}

// withProducer sets the producer id of an encoded batch (encodeBatch's is
// -1) and its CRC again.
func withProducer(b []byte, pid int64) []byte {
	binary.BigEndian.PutUint64(b[batchHeaderSize+31:], uint64(pid))
	binary.BigEndian.PutUint32(b[batchHeaderSize+5:], crc32.Checksum(b[batchHeaderSize+9:], castagnoli))
	return b
}

// TestReadCommittedSkipsTheAbortedBatchesOfAResponse decodes one response
// whose partition lists an aborted transaction of producer 3 from offset 2
// (fetchPartition): producer 3's transactional batch is skipped when read
// committed, and its offsets are passed over either way up to the marker.
func TestReadCommittedSkipsTheAbortedBatchesOfAResponse(t *testing.T) {
	records := encodeBatch(t, 0, compress.None, 0, 1, testRecords()) // offsets 0–2, 4 (3 compacted)
	records = append(records, withProducer(encodeBatch(t, 10, compress.None, attrTransactional, 1, testRecords()), 3)...)
	records = append(records, withProducer(encodeBatch(t, 20, compress.None, attrTransactional|attrControl, 1,
		[]kmsg.Record{{Key: []byte{0, 0, 0, 0}}}), 3)...)
	topic := kmsg.FetchResponseTopic{Topic: "events", Partitions: []kmsg.FetchResponseTopicPartition{fetchPartition(3, 0, 21, records)}}
	for _, c := range []struct {
		committed bool
		want      string
	}{
		{true, "[0 1 2 4]"},
		{false, "[0 1 2 4 10 11 12 14]"},
	} {
		fe := &Fetcher{cfg: Config{Topic: "events", Partition: 3, Log: zerolog.Nop(), ReadCommitted: c.committed}, version: 11}
		msgs, err := readResponse(fe, fetchResponse(11, 7, 0, topic), 4096)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, m := range msgs {
			got = append(got, m.Offset)
		}
		if fmt.Sprint(got) != c.want || fe.offset != 21 {
			t.Fatalf("read committed %v: offsets %v, next %d; want %s, next 21", c.committed, got, fe.offset, c.want)
		}
	}
}

// readResponse decodes a whole Fetch response to request 7, in fe's Fetch
// version, read through a buffer of bufSize bytes.
func readResponse(fe *Fetcher, data []byte, bufSize int) ([]kafka.Message, error) {
	fe.corr = 7
	fe.resp = response{r: bufio.NewReaderSize(bytes.NewReader(data), bufSize)}
	if err := fe.readHead(); err != nil {
		return nil, err
	}
	return fe.read(nil, 0, 1<<16)
}

// uncleared gives memory of its own, of the capacity asked, for a record
// batch to be read into.
func TestUnclearedIsAnAllocationOfItsOwn(t *testing.T) {
	for _, n := range []int{1, 4095, 256<<10 + 1, 3 << 20} {
		a, b := uncleared(n), uncleared(n)
		if len(a) != 0 || cap(a) < n {
			t.Fatalf("uncleared(%d): len %d cap %d", n, len(a), cap(a))
		}
		a, b = a[:n], b[:n]
		for i := range a {
			a[i], b[i] = byte(i), ^byte(i)
		}
		for i := range a {
			if a[i] != byte(i) || b[i] != ^byte(i) {
				t.Fatalf("uncleared(%d): two allocations share byte %d", n, i)
			}
		}
	}
}
