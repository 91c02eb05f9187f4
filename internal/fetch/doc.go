// Package fetch is a Kafka Fetch client and record-batch decoder for one
// partition: a Fetcher finds the partition's leader, sends it Fetch
// requests and decodes the record batches of the responses into
// kafka-go Messages, in the caller's goroutine. The consumer's partition
// goroutines read through it, and so does the benchmark's Conn baseline.
//
// # Concurrency
//
// A Fetcher is not safe for concurrent use: Fill and Next run in the
// caller's goroutine and return what was read. A metadata lookup asks
// several brokers at once from goroutines of its own, and waits for all of
// them before it returns. Cancelling the context of a call closes the
// connection it waits on, so the call returns at once.
//
// # Protocol
//
// Requests are written and responses read here, on the socket under
// kafka-go's Conn (bufconn.go). Every connection is made with the
// configured kafka-go Dialer: its DialFunc or dial settings, its TLS
// config (applied in bufconn.go) and its SASL mechanism. kafka-go's Conn
// reads the log's offset range (ListOffsets) and the broker's API
// versions; everything else is this package's.
//
//   - Metadata v1–v8 (v7 and v8 carry leader epochs; v8 is the last
//     version before flexible encoding), encoded by kafka-go's protocol
//     package, names the partition's leader, its address and its epoch,
//     and the cluster's brokers.
//   - Fetch v4–v11, the highest both sides have: one topic, one partition,
//     no fetch session (session id 0, epoch −1), replica id −1, the
//     isolation level asked for. From v9 each fetch carries the leader
//     epoch the metadata gave (KIP-320); from v11 an empty rack id.
//   - Record batches of magic 2 are decoded here. A batch of magic 0 or 1
//     (written before Kafka 0.11), or a broker without Fetch v4–v11,
//     switches the Fetcher to kafka-go's Conn.ReadBatchWith for the rest
//     of its life (legacy): kafka-go decodes the old formats.
//
// # What the decoder checks
//
//   - Response framing: the size prefix, the correlation id, and every
//     field read within the response's size; the topic and partition asked
//     for are present; the response's and the partition's error codes,
//     returned as kafka.Error.
//   - Batch framing: a batch length that is negative or above 256 MiB is
//     an error before anything is allocated for it. A batch that runs past
//     the partition's bytes was cut by the broker at the fetch size: the
//     next fetch starts at it, and when it is the response's first batch
//     (larger than the fetch size) it is an error naming the fetch size.
//   - Magic 2 (else legacy, above), then the CRC-32C of the batch from its
//     attributes to its end, before anything else of the batch is used; a
//     non-negative record count; a known codec (gzip, snappy, lz4, zstd)
//     and at most 256 MiB decompressed.
//   - Each record's varint framing (length, key, value, header count,
//     headers) within its batch: a record that runs past it ends the
//     response with an error after the records decoded before it.
//   - Offsets: records below the offset asked for (a batch may start
//     before it) are skipped; the next offset is the one after the batch's
//     last offset delta, past records compaction removed and past control
//     batches.
//   - Control batches (transaction markers) are never returned; the key of
//     their record says commit or abort.
//   - Read committed: the broker stops the response at the last stable
//     offset and lists the partition's aborted transactions (producer,
//     first offset). As the Java consumer does, a transactional batch of a
//     producer with an aborted transaction starting at or before the
//     batch's last offset is skipped, before it is decompressed, until that
//     producer's abort marker; the count is reported in
//     Position.AbortedRecords.
//
// It relies on the broker for the rest: offsets that increase within the
// partition, the base offset and length (the CRC does not cover them) and
// the partition leader epoch of each batch (not used), timestamps, and
// producer ids and sequences, which are not checked. Header keys become
// strings unchecked.
//
// # Memory
//
// Keys and values are views of the record batch, which is read in one
// piece from the connection's 256 KiB buffer: a batch's records are copied
// out into one allocation per batch and call (own), and an uncompressed
// batch bigger than the buffer is read into an allocation of its own
// (Block) that its messages keep. Spans says which messages share what.
//
// # Leaders
//
// The Fetcher connects to the leader that the metadata names, directly,
// and sends that leader's epoch in every fetch, so a broker that is no
// longer the leader at that epoch answers FENCED_LEADER_EPOCH (74) instead
// of serving the fetch. On NOT_LEADER_OR_FOLLOWER (6), LEADER_NOT_AVAILABLE
// (5), FENCED_LEADER_EPOCH (74), UNKNOWN_LEADER_EPOCH (75), a failed
// connection to the leader, or metadata naming no leader, Fill follows the
// leader instead of returning the error: it asks for metadata at once and
// then every 100 ms (leaderPoll), and reconnects as soon as the metadata
// names a later epoch (after 5, 6 and 74: a broker whose metadata lags
// still names the old one) or any leader (after 75, which means the broker
// is behind the metadata, and after a failed connection, which may be the
// leader restarting). Messages read before the error are returned first.
// After 10 s (leaderWait) without a leader to read from, Fill returns the
// error and the next call starts again. A lookup asks the brokers the last
// metadata named, then the configured ones, a new one every 250 ms
// (lookupStagger) until one answers, the failed leader last: a dead or
// silent broker, configured or not, costs 250 ms, not a dial timeout.
//
// What Apache Kafka 4.4.0 does when leadership moves, measured on three
// brokers (TestClusterParkedFetchWhenLeadershipMoves, commands in
// cluster_test.go): a fetch waiting at the log end (MaxWait 15 s) on the
// leader is answered FENCED_LEADER_EPOCH 21–106 ms after the election when
// it carries the epoch (Fetch v10 and v11). Without the epoch, Fetch v10
// is answered NOT_LEADER_OR_FOLLOWER, but Fetch v11 is held until MaxWait
// and answered without an error, and a new v11 fetch to the former leader
// is served from its log as a follower's: a v11 fetch names a rack, which
// lets followers serve consumers (KIP-392), and without the epoch nothing
// tells the broker the client wanted the leader. With a producer writing
// every 20 ms (acks=all, min.insync.replicas 2) and the Fetcher reading
// with MaxWait 2 s, SIGTERM to the leader paused the producer 0.5–1.9 s
// and the Fetcher read again from −34 to +70 ms after the producer was
// acknowledged again, with no error from Fill and every offset once, in
// order (TestClusterFetcherFollowsAStoppedLeader, 7 runs). After SIGKILL
// the metadata named a new leader 8.6 s later (the controller's
// broker.session.timeout.ms, 9 s), and the producer and the Fetcher both
// resumed 12.7 s after the crash (1 run).
//
// Not done: the Fetcher does not ask OffsetForLeaderEpoch after a leader
// change (KIP-320's log truncation detection). After an unclean election
// an offset past the new leader's log end is reported (OFFSET_OUT_OF_RANGE,
// below), but records that the new leader holds at offsets the Fetcher had
// already read from the old one are not detected.
//
// # Offsets out of range
//
// After an OFFSET_OUT_OF_RANGE answer the next connection reads the log's
// range first: an offset below the log start (retention deleted it) moves
// to the log start with a warning naming the skipped count; an offset past
// the log end is returned as an error, call after call, until the log
// reaches it.
package fetch
