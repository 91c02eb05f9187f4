package fetch

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"

	"github.com/ampstream/ampstream/internal/prefetch"
)

// The Fetch request and response (API key 1, versions 4–11) and record
// batches (magic 2): what is checked, and what is left to kafka-go, is in
// the package doc.

const (
	apiFetch        = 1
	minFetchVersion = 4
	maxFetchVersion = 11

	batchHeaderSize = 12 // base offset, batch length
	batchFixedSize  = 49 // partition leader epoch … record count

	attrCodec         = 0x07
	attrLogAppend     = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20

	// maxScratch is the largest record-batch buffer a Fetcher keeps
	// between responses (a batch bigger than the connection's buffer is
	// read into one): the broker's default max.message.bytes is just over
	// 1 MiB. A bigger one is dropped after use, and so is any buffer once
	// the partition is caught up (a response without records).
	maxScratch = 2 << 20

	// maxDecompressed bounds what one compressed record batch may expand
	// to (its records are decoded from memory): a batch past it is
	// reported, not decoded. Producers' batches are at most
	// max.message.bytes (1 MiB by default) compressed.
	maxDecompressed = 256 << 20

	// maxBatch bounds the length a record batch may claim, checked before
	// its buffer is allocated: a corrupt length must not allocate
	// gigabytes. Brokers bound batches by max.message.bytes (1 MiB by
	// default).
	maxBatch = 256 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errLegacy reports a record batch in a message format older than magic 2.
var errLegacy = errors.New("record batch in a pre-0.11 message format")

// appendFetchRequest appends a size-prefixed Fetch request for one
// partition, outside any fetch session.
func appendFetchRequest(b []byte, version int16, correlation int32, clientID, topic string,
	partition, leaderEpoch int32, offset int64, maxWait time.Duration, minBytes, maxBytes int32, isolation kafka.IsolationLevel) []byte {
	at := len(b)
	b = binary.BigEndian.AppendUint32(b, 0) // size, set below
	b = binary.BigEndian.AppendUint16(b, apiFetch)
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, uint32(correlation))
	b = appendString(b, clientID)

	b = binary.BigEndian.AppendUint32(b, 0xffffffff) // replica id -1: a consumer
	b = binary.BigEndian.AppendUint32(b, uint32(maxWait.Milliseconds()))
	b = binary.BigEndian.AppendUint32(b, uint32(minBytes))
	b = binary.BigEndian.AppendUint32(b, uint32(maxBytes))
	b = append(b, byte(isolation)) // kafka-go's values are the protocol's
	if version >= 7 {
		b = binary.BigEndian.AppendUint32(b, 0)          // session id: none
		b = binary.BigEndian.AppendUint32(b, 0xffffffff) // session epoch -1: sessionless
	}
	b = binary.BigEndian.AppendUint32(b, 1) // one topic
	b = appendString(b, topic)
	b = binary.BigEndian.AppendUint32(b, 1) // one partition
	b = binary.BigEndian.AppendUint32(b, uint32(partition))
	if version >= 9 {
		b = binary.BigEndian.AppendUint32(b, uint32(leaderEpoch)) // KIP-320: fences a stale leader
	}
	b = binary.BigEndian.AppendUint64(b, uint64(offset))
	if version >= 5 {
		b = binary.BigEndian.AppendUint64(b, 0xffffffffffffffff) // log start offset: a consumer's -1
	}
	b = binary.BigEndian.AppendUint32(b, uint32(maxBytes)) // partition max bytes
	if version >= 7 {
		b = binary.BigEndian.AppendUint32(b, 0) // no forgotten topics
	}
	if version >= 11 {
		b = appendString(b, "") // rack id
	}
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// response reads one Fetch response from the connection's buffer, field by
// field, counting what is left of it.
type response struct {
	r    *bufio.Reader
	left int      // bytes of the response not read yet
	tmp  [16]byte // fixed-size fields, up to a batch header
}

func (r *response) bytes(n int) ([]byte, error) {
	if n > r.left {
		return nil, fmt.Errorf("fetch response: field of %d bytes past its end (%d left)", n, r.left)
	}
	b := r.tmp[:n]
	if _, err := io.ReadFull(r.r, b); err != nil {
		return nil, unexpectedEOF(err)
	}
	r.left -= n
	return b, nil
}

func (r *response) int16() (int16, error) {
	b, err := r.bytes(2)
	if err != nil {
		return 0, err
	}
	return int16(binary.BigEndian.Uint16(b)), nil
}

func (r *response) int32() (int32, error) {
	b, err := r.bytes(4)
	if err != nil {
		return 0, err
	}
	return int32(binary.BigEndian.Uint32(b)), nil
}

func (r *response) int64() (int64, error) {
	b, err := r.bytes(8)
	if err != nil {
		return 0, err
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// skip discards n bytes of the response.
func (r *response) skip(n int) error {
	if n > r.left {
		return fmt.Errorf("fetch response: %d bytes to skip past its end (%d left)", n, r.left)
	}
	d, err := r.r.Discard(n)
	r.left -= d
	return unexpectedEOF(err)
}

// stringIs reads a string and reports whether it equals want, without
// allocating.
func (r *response) stringIs(want string) (bool, error) {
	n, err := r.int16()
	if err != nil {
		return false, err
	}
	if n < 0 || int(n) > r.left {
		return false, fmt.Errorf("fetch response: string of length %d", n)
	}
	if int(n) != len(want) {
		return false, r.skip(int(n))
	}
	eq := true
	for i := 0; i < int(n); i++ {
		c, err := r.r.ReadByte()
		if err != nil {
			return false, unexpectedEOF(err)
		}
		r.left--
		eq = eq && c == want[i]
	}
	return eq, nil
}

// view returns the next n bytes of the response, in the connection's
// buffer when they fit there (valid until the next read), else read into
// *scratch.
func (r *response) view(n int, scratch *[]byte) ([]byte, error) {
	if n > r.left {
		return nil, fmt.Errorf("fetch response: %d bytes past its end (%d left)", n, r.left)
	}
	if n <= r.r.Size() {
		b, err := r.r.Peek(n)
		if err != nil {
			return nil, unexpectedEOF(err)
		}
		_, _ = r.r.Discard(n) // buffered: cannot fail
		r.left -= n
		return b, nil
	}
	// Grown as the bytes arrive, not to the length claimed: a corrupt
	// length runs into the end of the data before it allocates much.
	b := (*scratch)[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(n-len(b), max(cap(b), 64<<10)))
		}
		m := min(n, cap(b))
		if err := r.full(b[len(b):m]); err != nil {
			return nil, err
		}
		b = b[:m]
	}
	*scratch = b
	return b, nil
}

// full reads exactly len(b) bytes of the response into b.
func (r *response) full(b []byte) error {
	if len(b) > r.left {
		return fmt.Errorf("fetch response: %d bytes past its end (%d left)", len(b), r.left)
	}
	n, err := io.ReadFull(r.r, b)
	r.left -= n
	return unexpectedEOF(err)
}

// unexpectedEOF turns an io.EOF mid-response into io.ErrUnexpectedEOF: the
// connection ended, the response did not.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// partitionData is what a Fetch response says of the partition asked for,
// up to its records, which are read after it.
type partitionData struct {
	hwm     int64
	records int // bytes of record batches that follow
}

// abortedTxn is an aborted transaction a read-committed Fetch response
// lists for the partition: its producer and its first offset.
type abortedTxn struct {
	producerID  int64
	firstOffset int64
}

// readResponseHead reads a response's header and its fields up to the
// records of the partition asked for, and appends the partition's aborted
// transactions to *aborted. A response or partition error is
// returned as a kafka.Error.
func readResponseHead(r *response, version int16, correlation int32, topic string, partition int32, aborted *[]abortedTxn) (partitionData, error) {
	var pd partitionData
	r.left = 4 // the size, which precedes the response
	size, err := r.int32()
	if err != nil {
		return pd, err
	}
	if size < 4 {
		return pd, fmt.Errorf("fetch response of %d bytes", size)
	}
	r.left = int(size)
	id, err := r.int32()
	if err != nil {
		return pd, err
	}
	if id != correlation {
		return pd, fmt.Errorf("fetch response for request %d, want %d", id, correlation)
	}
	if _, err := r.int32(); err != nil { // throttle time: kafka-go ignores it too
		return pd, err
	}
	if version >= 7 {
		code, err := r.int16()
		if err != nil {
			return pd, err
		}
		if code != 0 {
			return pd, kafka.Error(code)
		}
		if _, err := r.int32(); err != nil { // session id
			return pd, err
		}
	}
	topics, err := r.int32()
	if err != nil {
		return pd, err
	}
	for range max(topics, 0) {
		ours, err := r.stringIs(topic)
		if err != nil {
			return pd, err
		}
		parts, err := r.int32()
		if err != nil {
			return pd, err
		}
		for range max(parts, 0) {
			id, err := r.int32()
			if err != nil {
				return pd, err
			}
			mine := ours && id == partition
			code, err := r.int16()
			if err != nil {
				return pd, err
			}
			hwm, err := r.int64()
			if err != nil {
				return pd, err
			}
			skip := 8 // last stable offset
			if version >= 5 {
				skip += 8 // log start offset
			}
			if err := r.skip(skip); err != nil {
				return pd, err
			}
			naborted, err := r.int32()
			if err != nil {
				return pd, err
			}
			if naborted = max(naborted, 0); 16*int(naborted) > r.left {
				return pd, fmt.Errorf("fetch response: %d aborted transactions, %d bytes left", naborted, r.left)
			}
			for range naborted { // producer id, first offset
				if !mine {
					if err := r.skip(16); err != nil {
						return pd, err
					}
					continue
				}
				pid, err := r.int64()
				if err != nil {
					return pd, err
				}
				first, err := r.int64()
				if err != nil {
					return pd, err
				}
				*aborted = append(*aborted, abortedTxn{producerID: pid, firstOffset: first})
			}
			if version >= 11 {
				if _, err := r.int32(); err != nil { // preferred read replica
					return pd, err
				}
			}
			n, err := r.int32()
			if err != nil {
				return pd, err
			}
			if n < 0 {
				n = 0
			}
			if mine {
				if code != 0 {
					return pd, kafka.Error(code)
				}
				if int(n) > r.left {
					return pd, fmt.Errorf("fetch response: %d bytes of records, %d left", n, r.left)
				}
				return partitionData{hwm: hwm, records: int(n)}, nil
			}
			if err := r.skip(int(n)); err != nil {
				return pd, err
			}
		}
	}
	return pd, fmt.Errorf("fetch response without %s/%d", topic, partition)
}

// batch is the record batch being decoded.
type batch struct {
	recs      []byte // records not decoded yet (scratch, or decompressed)
	all       []byte // every record: recs is its tail
	count     int    // records not decoded yet
	base      int64  // base offset
	end       int64  // the offset after the batch's last (compacted records leave gaps)
	baseTime  int64  // ms
	maxTime   int64  // ms
	logAppend bool   // timestamps are the broker's: every record has maxTime

	block      *Block         // the batch's own allocation, which its records are views of; nil when reused
	compressed bool           // recs were decompressed (into the Fetcher's unz)
	codec      compress.Codec // the records' compression; nil when none

	producerID    int64 // -1 when the batch has no producer id
	transactional bool  // part of a transaction
	control       bool  // a transaction marker (count is 0)
	abortMarker   bool  // a control batch that aborts its producer's transaction
}

// parseBatch checks and decodes the fixed part of a record batch: b holds
// the batch after its base offset and length fields. Records are
// decompressed into *unz when the batch is compressed.
func parseBatch(base int64, b []byte, unz *[]byte) (batch, error) {
	bt, err := parseBatchHead(base, b)
	if err != nil {
		return bt, err
	}
	return bt, bt.inflate(unz)
}

// parseBatchHead is parseBatch without decompressing: bt.codec is set when
// the records are compressed, and inflate decompresses them (or nothing
// does, for a batch skipped whole).
func parseBatchHead(base int64, b []byte) (batch, error) {
	bt := batch{base: base}
	if len(b) < 5 {
		return bt, fmt.Errorf("record batch at offset %d: %d bytes", base, len(b))
	}
	if magic := b[4]; magic != 2 {
		return bt, errLegacy
	}
	if len(b) < batchFixedSize {
		return bt, fmt.Errorf("record batch at offset %d: %d bytes", base, len(b))
	}
	if crc := binary.BigEndian.Uint32(b[5:9]); crc32.Checksum(b[9:], castagnoli) != crc {
		return bt, fmt.Errorf("record batch at offset %d: CRC mismatch (corrupt data)", base)
	}
	attrs := binary.BigEndian.Uint16(b[9:11])
	bt.end = base + int64(int32(binary.BigEndian.Uint32(b[11:15]))) + 1
	bt.producerID = int64(binary.BigEndian.Uint64(b[31:39]))
	bt.transactional = attrs&attrTransactional != 0
	if attrs&attrControl != 0 {
		// A transaction marker: no records to deliver. Its one record's key
		// says which: version (int16), then type (int16), 0 for an abort.
		bt.control = true
		bt.abortMarker = controlType(b[batchFixedSize:]) == 0
		return bt, nil
	}
	bt.baseTime = int64(binary.BigEndian.Uint64(b[15:23]))
	bt.maxTime = int64(binary.BigEndian.Uint64(b[23:31]))
	bt.logAppend = attrs&attrLogAppend != 0
	count := int32(binary.BigEndian.Uint32(b[45:49]))
	if count < 0 {
		return bt, fmt.Errorf("record batch at offset %d: %d records", base, count)
	}
	bt.count = int(count)
	bt.recs = b[batchFixedSize:]
	bt.all = bt.recs
	if c := compress.Compression(attrs & attrCodec); c != compress.None {
		if bt.codec = c.Codec(); bt.codec == nil {
			return bt, fmt.Errorf("record batch at offset %d: unknown compression codec %d", base, c)
		}
	}
	return bt, nil
}

// inflate decompresses bt's records into *unz when they are compressed.
func (bt *batch) inflate(unz *[]byte) error {
	if bt.codec == nil || bt.compressed {
		return nil
	}
	out, err := decompress(bt.codec, bt.recs, (*unz)[:0])
	*unz = out
	if err != nil {
		return fmt.Errorf("record batch at offset %d: %s: %w", bt.base, bt.codec.Name(), err)
	}
	bt.recs, bt.all, bt.compressed = out, out, true
	return nil
}

// controlType returns the type in the key of a control batch's first
// record: 0 abort, 1 commit, -1 when the record is malformed. Control
// batches are never compressed.
func controlType(recs []byte) int {
	_, i := zigzag(recs, 0) // length
	if i < 0 {
		return -1
	}
	_, i = zigzag(recs, i+1) // after the attributes: timestamp delta
	_, i = zigzag(recs, i)   // offset delta
	key, ok := bytesAt(recs, &i)
	if !ok || len(key) < 4 {
		return -1
	}
	return int(int16(binary.BigEndian.Uint16(key[2:])))
}

// decompress appends the decompression of in to out, up to
// maxDecompressed bytes.
func decompress(codec compress.Codec, in, out []byte) ([]byte, error) {
	r := codec.NewReader(bytes.NewReader(in))
	defer r.Close()
	if cap(out) == 0 {
		out = make([]byte, 0, min(4*len(in), maxDecompressed))
	}
	for empty := 0; ; {
		if len(out) == cap(out) {
			if len(out) >= maxDecompressed {
				return out, fmt.Errorf("more than %d MiB decompressed", maxDecompressed>>20)
			}
			out = append(out, 0)[:len(out)] // grow
		}
		n, err := r.Read(out[len(out):min(cap(out), maxDecompressed)])
		out = out[:len(out)+n]
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if n > 0 {
			empty = 0
		} else if empty++; empty == 100 { // as bufio.Reader does: a codec that never advances
			return out, io.ErrNoProgress
		}
	}
}

// next decodes the batch's next record into msg: its key and value are
// views of the batch (see Fetcher.read), its headers take two allocations
// per header.
func (bt *batch) next(msg *kafka.Message) error {
	bt.count--
	b := bt.recs
	length, i := zigzag(b, 0)
	if i < 0 || length < 1 || int64(len(b)-i) < length {
		return bt.corrupt("record length")
	}
	rec := b[i : i+int(length)]
	bt.recs = b[i+int(length):]
	// The decoder reads a record's framing, not its value, which it
	// skips: the hardware prefetcher does not follow such sparse reads,
	// and the header count after each value missed the caches (2 % of all
	// CPU in make bench). The lines prefetchAhead bytes ahead are loaded
	// as the decoder advances, as many as it just consumed.
	if ahead := i + int(length) + prefetchAhead; ahead < len(b) {
		prefetch.Bytes(b[ahead:min(len(b), ahead+i+int(length))])
	}
	i = 1 // attributes: unused
	tsDelta, i := zigzag(rec, i)
	offDelta, i := zigzag(rec, i)
	klen, i := zigzag(rec, i)
	if i < 0 || klen < -1 || klen > int64(len(rec)-i) {
		return bt.corrupt("key")
	}
	k := i
	i += max(int(klen), 0)
	vlen, i := zigzag(rec, i)
	if i < 0 || vlen < -1 || vlen > int64(len(rec)-i) {
		return bt.corrupt("value")
	}
	v := i
	i += max(int(vlen), 0)
	nh, i := zigzag(rec, i)
	if i < 0 || nh < 0 || nh > int64(len(rec)-i) {
		return bt.corrupt("header count")
	}
	kend, vend := k+max(int(klen), 0), v+max(int(vlen), 0)
	key, value := rec[k:kend:kend], rec[v:vend:vend]

	msg.Offset = bt.base + offDelta
	ts := bt.baseTime + tsDelta
	if bt.logAppend {
		ts = bt.maxTime
	}
	msg.Time = time.UnixMilli(ts)
	msg.Key, msg.Value = nil, nil
	if len(key) > 0 {
		msg.Key = key
	}
	if len(value) > 0 {
		msg.Value = value
	}
	msg.Headers = nil
	if nh > 0 {
		msg.Headers = make([]kafka.Header, nh)
		for j := range msg.Headers {
			hk, ok := bytesAt(rec, &i)
			if !ok {
				return bt.corrupt("header key")
			}
			hv, ok := bytesAt(rec, &i)
			if !ok {
				return bt.corrupt("header value")
			}
			msg.Headers[j] = kafka.Header{Key: string(hk)}
			if len(hv) > 0 {
				msg.Headers[j].Value = append([]byte(nil), hv...)
			}
		}
	}
	return nil
}

// prefetchAhead is how far ahead of the record being decoded next
// prefetches the batch: about ten records of the benchmark's events.
const prefetchAhead = 4 << 10

// pos is the offset in bt.all of the next record to decode.
func (bt *batch) pos() int { return len(bt.all) - len(bt.recs) }

func (bt *batch) corrupt(what string) error {
	return fmt.Errorf("record batch at offset %d: corrupt record (%s)", bt.base, what)
}

// zigzag reads the zigzag varint (Kafka's, and encoding/binary's, signed
// encoding) at b[i:], and returns it with the index after it; the index is
// negative when b holds no varint there, and stays so for later calls.
func zigzag(b []byte, i int) (int64, int) {
	if uint(i) < uint(len(b)) && b[i] < 0x80 { // one byte: most fields of a record
		u := int64(b[i])
		return u>>1 ^ -(u & 1), i + 1
	}
	return zigzagSlow(b, i)
}

func zigzagSlow(b []byte, i int) (int64, int) {
	if i < 0 || i > len(b) {
		return 0, -1
	}
	if i+1 < len(b) && b[i+1] < 0x80 { // two bytes: a record's length, a value's
		u := int64(b[i]&0x7f) | int64(b[i+1])<<7
		return u>>1 ^ -(u & 1), i + 2
	}
	v, n := binary.Varint(b[i:])
	if n <= 0 {
		return 0, -1
	}
	return v, i + n
}

// bytesAt reads a varint length and that many bytes at b[*i:] (-1 is null)
// and moves *i past them.
func bytesAt(b []byte, i *int) ([]byte, bool) {
	n, j := zigzag(b, *i)
	if j < 0 || n < -1 || n > int64(len(b)-j) {
		return nil, false
	}
	n = max(n, 0)
	*i = j + int(n)
	return b[j:*i], true
}
