package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/metadata"
)

// Finding the partition's leader. A Metadata request (v7 or v8, the last
// versions before flexible encoding) to any broker names the leader and
// its epoch; the Fetcher dials the leader directly and sends the epoch in
// every Fetch (v9+, KIP-320), so a broker that is no longer the leader at
// that epoch answers FENCED_LEADER_EPOCH instead of serving or holding the
// fetch. kafka-go's Transport would answer metadata from a cache refreshed
// every few seconds, and its Conn asks for Metadata v1, which carries no
// epoch: the request goes here over a connection of kafka-go's Dialer (TLS,
// SASL), with kafka-go's protocol package encoding it.

const (
	// leaderPoll is how often metadata is asked for while the leader that
	// failed has not been replaced, as the Java client's retry.backoff.ms.
	leaderPoll = 100 * time.Millisecond
	// leaderWait bounds how long Fill follows a failed leader before it
	// returns the error: a crashed broker's partitions get a new leader
	// once the controller stops hearing from it (broker.session.timeout.ms,
	// 9 s by default).
	leaderWait = 10 * time.Second
	// lookupStagger is how long a metadata lookup waits for one broker
	// before it asks the next one too: a broker that is down, or whose
	// address goes nowhere, delays a lookup by this much, not by a dial
	// timeout.
	lookupStagger = 250 * time.Millisecond

	apiMetadata        = 3
	maxMetadataVersion = 8 // the last before flexible encoding
	minEpochMetadata   = 7 // the first with leader epochs
)

// errNoLeader reports metadata naming no leader for the partition.
var errNoLeader = errors.New("no leader")

// leader is a partition's leader, as a Metadata response named it.
type leader struct {
	broker kafka.Broker // ID -1: no leader
	epoch  int32        // -1: unknown (Metadata below v7)
}

func (l leader) addr() string { return net.JoinHostPort(l.broker.Host, strconv.Itoa(l.broker.Port)) }

// metaConn is a connection that metadata is asked on.
type metaConn struct {
	conn    *kafka.Conn
	raw     *bufConn
	addr    string
	version int16
	corr    int32
}

func (m *metaConn) close() { _ = m.conn.Close() }

// leaderFailed reports whether err, met fetching from the leader or
// connecting to it, means the partition's leader has to be found again:
// the broker is not (or no longer) its leader at the epoch asked for, or
// the connection to it failed.
func leaderFailed(err error) bool {
	var ke kafka.Error
	if errors.As(err, &ke) { // a kafka.Error is a net.Error too: first
		switch ke {
		case kafka.NotLeaderForPartition, kafka.LeaderNotAvailable, kafka.FencedLeaderEpoch, kafka.UnknownLeaderEpoch:
			return true
		}
		return false
	}
	if errors.Is(err, net.ErrClosed) {
		return false // closed here: the caller's context ended, or Close
	}
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne)
}

// replaces reports whether a Fetcher whose leader old failed with why may
// connect to l, which metadata now names. After NOT_LEADER_OR_FOLLOWER,
// FENCED_LEADER_EPOCH or LEADER_NOT_AVAILABLE only a later epoch than
// old's will do (a broker whose metadata lags still names old);
// UNKNOWN_LEADER_EPOCH means the broker is behind the metadata, and a
// failed connection may be the leader restarting: any leader will do, asked
// again a poll later. Without epochs (brokers before Kafka 2.1) any leader
// will do.
func replaces(old, l leader, why error) bool {
	if l.broker.ID < 0 {
		return false
	}
	var ke kafka.Error
	if errors.As(why, &ke) && ke != kafka.UnknownLeaderEpoch && old.epoch >= 0 && l.epoch >= 0 {
		return l.epoch > old.epoch
	}
	return true
}

// follow records that leader l failed with why: connect polls metadata for
// its replacement from now on, for up to leaderWait.
func (f *Fetcher) follow(l leader, why error) {
	if f.gone.IsZero() {
		f.gone = time.Now()
		f.cfg.Log.Info().Int("leader", l.broker.ID).Int32("leader_epoch", l.epoch).AnErr("reason", why).
			Msg("partition leader failed: following its replacement")
	}
	f.left, f.why = l, why
}

// followed ends following once a leader answered a fetch.
func (f *Fetcher) followed() {
	f.cfg.Log.Info().Int("leader", f.leader.broker.ID).Int32("leader_epoch", f.leader.epoch).
		Dur("after", time.Since(f.gone)).Msg("fetching from the partition's leader again")
	f.gone = time.Time{}
}

// lookup asks the cluster for the partition's leader: on the metadata
// connection when one is open, else on the first broker to answer of those
// it knows (learnt from metadata, then the configured ones), asked one
// after another lookupStagger apart without waiting for the slow ones.
func (f *Fetcher) lookup(ctx context.Context) (leader, error) {
	if f.meta != nil {
		resp, err := f.askMetadata(f.meta)
		if err == nil {
			return f.readMetadata(f.meta, resp)
		}
		f.closeMeta()
	}
	addrs := f.candidates()
	if len(addrs) == 0 {
		return leader{}, errors.New("fetch: no brokers configured")
	}
	type result struct {
		mc   *metaConn
		resp *metadata.Response
		err  error
	}
	results := make(chan result, len(addrs))
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		for range len(results) {
			if r := <-results; r.mc != nil {
				r.mc.close()
			}
		}
	}()
	start := func(addr string) {
		wg.Go(func() {
			mc, resp, err := f.openMeta(lctx, addr)
			results <- result{mc, resp, err}
		})
	}
	stagger := time.NewTimer(lookupStagger)
	defer stagger.Stop()
	var errs []error
	started, pending := 1, 1
	start(addrs[0])
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				f.meta = r.mc
				return f.readMetadata(r.mc, r.resp)
			}
			errs = append(errs, r.err)
			if pending > 0 || started == len(addrs) {
				continue
			}
		case <-stagger.C:
			if started == len(addrs) {
				continue
			}
		case <-ctx.Done():
			return leader{}, ctx.Err()
		}
		start(addrs[started])
		started++
		pending++
		stagger.Reset(lookupStagger)
	}
	return leader{}, fmt.Errorf("no broker answered a metadata request for %s/%d: %w", f.cfg.Topic, f.cfg.Partition, errors.Join(errs...))
}

// candidates lists the brokers a lookup asks, in order: those the last
// metadata named, the one that answered last first, then the configured
// ones not among them; the leader that failed comes last.
func (f *Fetcher) candidates() []string {
	addrs := make([]string, 0, len(f.known)+len(f.cfg.Brokers))
	if i := slices.Index(f.known, f.metaAddr); i >= 0 {
		addrs = append(addrs, f.known[i:]...)
		addrs = append(addrs, f.known[:i]...)
	} else {
		addrs = append(addrs, f.known...)
	}
	for i := range f.cfg.Brokers {
		// A different configured broker first on each attempt: one that
		// is down should not delay every lookup.
		if b := f.cfg.Brokers[(f.dials+i)%len(f.cfg.Brokers)]; !slices.Contains(addrs, b) {
			addrs = append(addrs, b)
		}
	}
	if !f.gone.IsZero() && f.left.broker.ID >= 0 {
		if i := slices.Index(addrs, f.left.addr()); i >= 0 && len(addrs) > 1 {
			addrs = append(slices.Delete(addrs, i, i+1), f.left.addr())
		}
	}
	return addrs
}

// openMeta dials addr and asks it for the partition's metadata.
func (f *Fetcher) openMeta(ctx context.Context, addr string) (*metaConn, *metadata.Response, error) {
	conn, raw, err := dialRaw(ctx, func(ctx context.Context) (*kafka.Conn, error) {
		return f.cfg.Dialer.DialContext(ctx, "tcp", addr)
	})
	if err != nil {
		return nil, nil, err
	}
	// Abandoned (another broker answered first, or the caller ended):
	// closing the connection ends what is being read from it.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	mc := &metaConn{conn: conn, raw: raw, addr: addr}
	resp, err := f.negotiateMetadata(mc)
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		mc.close()
		return nil, nil, fmt.Errorf("metadata from %s: %w", addr, err)
	}
	return mc, resp, nil
}

// negotiateMetadata picks the connection's Metadata version and asks for
// the partition's metadata.
func (f *Fetcher) negotiateMetadata(mc *metaConn) (*metadata.Response, error) {
	_ = mc.conn.SetDeadline(time.Now().Add(f.cfg.ReadTimeout))
	versions, err := mc.conn.ApiVersions()
	_ = mc.conn.SetDeadline(time.Time{})
	if err != nil {
		return nil, err
	}
	mc.version = -1
	for _, v := range versions {
		if v.ApiKey == apiMetadata && v.MaxVersion >= 1 && v.MinVersion <= maxMetadataVersion {
			mc.version = min(v.MaxVersion, maxMetadataVersion)
		}
	}
	if mc.version < 0 {
		return nil, errors.New("the broker has no Metadata version 1 to 8")
	}
	return f.askMetadata(mc)
}

// askMetadata sends a Metadata request for the Fetcher's topic on mc.
func (f *Fetcher) askMetadata(mc *metaConn) (*metadata.Response, error) {
	mc.corr++
	_ = mc.raw.SetDeadline(time.Now().Add(f.cfg.ReadTimeout))
	defer mc.raw.SetDeadline(time.Time{})
	req := &metadata.Request{TopicNames: []string{f.cfg.Topic}}
	msg, err := protocol.RoundTrip(mc.raw, mc.version, mc.corr, f.cfg.Dialer.ClientID, req)
	if err != nil {
		return nil, err
	}
	resp, ok := msg.(*metadata.Response)
	if !ok {
		return nil, fmt.Errorf("metadata request answered with %T", msg)
	}
	return resp, nil
}

// readMetadata takes what a Metadata response on mc says of the cluster's
// brokers and of the partition's leader.
func (f *Fetcher) readMetadata(mc *metaConn, resp *metadata.Response) (leader, error) {
	f.metaAddr = mc.addr
	l, brokers, err := partitionLeader(resp, mc.version, f.cfg.Topic, int32(f.cfg.Partition))
	if len(brokers) > 0 {
		f.known = brokers
	}
	return l, err
}

// partitionLeader reads the leader of topic/partition and the addresses of
// the cluster's brokers from a Metadata response of the given version. A
// partition without a leader is returned with broker ID -1 and the
// partition's error.
func partitionLeader(resp *metadata.Response, version int16, topic string, partition int32) (leader, []string, error) {
	l := leader{broker: kafka.Broker{ID: -1}, epoch: -1}
	brokers := make([]string, 0, len(resp.Brokers))
	for _, b := range resp.Brokers {
		brokers = append(brokers, net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))))
	}
	i := slices.IndexFunc(resp.Topics, func(t metadata.ResponseTopic) bool { return t.Name == topic })
	if i < 0 {
		return l, brokers, fmt.Errorf("metadata without topic %s", topic)
	}
	t := &resp.Topics[i]
	if t.ErrorCode != 0 {
		return l, brokers, fmt.Errorf("metadata of topic %s: %w", topic, kafka.Error(t.ErrorCode))
	}
	j := slices.IndexFunc(t.Partitions, func(p metadata.ResponsePartition) bool { return p.PartitionIndex == partition })
	if j < 0 {
		return l, brokers, fmt.Errorf("metadata of %s/%d: %w", topic, partition, kafka.UnknownTopicOrPartition)
	}
	p := &t.Partitions[j]
	if version >= minEpochMetadata {
		l.epoch = p.LeaderEpoch
	}
	k := slices.IndexFunc(resp.Brokers, func(b metadata.ResponseBroker) bool { return b.NodeID == p.LeaderID })
	if p.LeaderID < 0 || k < 0 {
		code := kafka.LeaderNotAvailable
		if p.ErrorCode != 0 {
			code = kafka.Error(p.ErrorCode)
		}
		return l, brokers, fmt.Errorf("metadata of %s/%d: %w: %w", topic, partition, errNoLeader, code)
	}
	b := &resp.Brokers[k]
	l.broker = kafka.Broker{ID: int(b.NodeID), Host: b.Host, Port: int(b.Port), Rack: b.Rack}
	return l, brokers, nil
}

// closeMeta closes the metadata connection.
func (f *Fetcher) closeMeta() {
	if f.meta != nil {
		f.meta.close()
		f.meta = nil
	}
}
