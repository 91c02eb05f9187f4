package fetch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/metadata"
	kscram "github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/ampstream/ampstream/internal/kafkatest"
)

// startMoving starts an in-process cluster of n brokers with a
// one-partition topic whose leader the test moves (kfake does, whatever
// KAFKA_BROKERS says), and returns it with a kafkatest.Cluster naming its
// brokers for the produce helpers.
func startMoving(t *testing.T, n int) (*kfake.Cluster, *kafkatest.Cluster, string) {
	t.Helper()
	kc, err := kfake.NewCluster(kfake.NumBrokers(n), kfake.SeedTopics(1, "moving"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	return kc, &kafkatest.Cluster{Brokers: kc.ListenAddrs(), Provider: kafkatest.ProviderKfake}, "moving"
}

// seen is a request the cluster received: the broker, and for a fetch the
// leader epoch it carried.
type seen struct{ node, epoch int32 }

// watch records every request of the given key the cluster receives,
// leaving it to the cluster to answer.
func watch(kc *kfake.Cluster, key kmsg.Key) func() []seen {
	var mu sync.Mutex
	var all []seen
	kc.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		s := seen{node: kc.CurrentNode(), epoch: -2}
		if r, ok := req.(*kmsg.FetchRequest); ok && len(r.Topics) == 1 && len(r.Topics[0].Partitions) == 1 {
			s.epoch = r.Topics[0].Partitions[0].CurrentLeaderEpoch
		}
		mu.Lock()
		all = append(all, s)
		mu.Unlock()
		return nil, nil, false
	})
	return func() []seen {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(all)
	}
}

// answerFetchOnce answers the next fetch with a partition error.
func answerFetchOnce(kc *kfake.Cluster, topic string, code int16) {
	kc.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		resp.Version = req.GetVersion()
		p := kmsg.NewFetchResponseTopicPartition()
		p.ErrorCode, p.HighWatermark, p.LastStableOffset, p.LogStartOffset = code, -1, -1, -1
		resp.Topics = []kmsg.FetchResponseTopic{{Topic: topic, Partitions: []kmsg.FetchResponseTopicPartition{p}}}
		return resp, nil, true
	})
}

func newMovingFetcher(brokers []string, topic string) *Fetcher {
	return New(Config{
		Dialer: &kafka.Dialer{Timeout: 10 * time.Second}, Brokers: brokers, Topic: topic,
		MaxWait: 200 * time.Millisecond, Log: zerolog.Nop(),
	})
}

// A partition moved from broker to broker is read on, every offset once
// and in order, without Fill returning an error, and its fetches carry
// the leader epoch of the broker they go to.
func TestFetcherFollowsAPartitionAsItsLeaderMoves(t *testing.T) {
	kc, c, topic := startMoving(t, 3)
	fetches := watch(kc, kmsg.Fetch)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := newMovingFetcher(c.Brokers[:1], topic)
	defer f.Close()

	for round := range 4 {
		if round > 0 {
			// The fetcher waits at the old leader (200 ms fetches) when
			// the partition moves.
			to := (kc.LeaderFor(topic, 0) + 1) % 3
			if err := kc.MoveTopicPartition(topic, 0, to); err != nil {
				t.Fatal(err)
			}
		}
		produceN(t, c, topic, 50*round, 50)
		start := time.Now()
		readN(t, ctx, f, int64(50*round), 50) // fails on any error
		// Typically 0.2–0.5 s (a 200 ms fetch waits at the old leader);
		// 5 s leaves room for a loaded machine.
		if took := time.Since(start); round > 0 && took > 5*time.Second {
			t.Fatalf("round %d: %v to read the moved partition", round, took)
		}
	}
	if f.dials != 4 || int32(f.leader.broker.ID) != kc.LeaderFor(topic, 0) {
		t.Fatalf("%d leader connections, leader %d; want 4, %d", f.dials, f.leader.broker.ID, kc.LeaderFor(topic, 0))
	}
	// Every fetch named the epoch its leader was given: 0 on the first
	// broker, one more on each move.
	epochs := map[int32]int32{}
	for _, s := range fetches() {
		if n, ok := epochs[s.epoch]; ok && n != s.node {
			t.Fatalf("fetches with epoch %d went to brokers %d and %d", s.epoch, n, s.node)
		}
		epochs[s.epoch] = s.node
	}
	if len(epochs) != 4 || f.leader.epoch != 3 {
		t.Fatalf("fetch epochs %v, leader epoch %d; want epochs 0–3", epochs, f.leader.epoch)
	}
}

// Each error by which a broker says it is not the partition's leader at
// the fetch's epoch is followed inside Fill: no error is returned, no
// offset skipped or read twice.
func TestFetcherFollowsLeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		code  int16 // injected into one fetch response; 0: none
		bump  bool  // then the leader's epoch moves on (kfake fences the old one itself)
		delay time.Duration
	}{
		{name: "fenced leader epoch", bump: true},
		{name: "not leader, then a new epoch", code: int16(kafka.NotLeaderForPartition), bump: true, delay: 300 * time.Millisecond},
		{name: "leader not available, then a new epoch", code: int16(kafka.LeaderNotAvailable), bump: true, delay: 300 * time.Millisecond},
		{name: "unknown leader epoch", code: int16(kafka.UnknownLeaderEpoch)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc, c, topic := startMoving(t, 1)
			metas := watch(kc, kmsg.Metadata)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			f := newMovingFetcher(c.Brokers, topic)
			defer f.Close()
			produceN(t, c, topic, 0, 20)
			readN(t, ctx, f, 0, 20)
			epoch, lookups := f.leader.epoch, len(metas())

			if tc.code != 0 {
				answerFetchOnce(kc, topic, tc.code)
			}
			start := time.Now()
			if tc.bump {
				go func() {
					time.Sleep(tc.delay) // the new leader is elected a while after the error
					_ = kc.MoveTopicPartition(topic, 0, 0)
				}()
			}
			produceN(t, c, topic, 20, 20)
			readN(t, ctx, f, 20, 20)
			took := time.Since(start)
			if took > 5*time.Second {
				t.Fatalf("%v to read on after the error", took)
			}
			if want := epoch + map[bool]int32{true: 1}[tc.bump]; f.leader.epoch != want || f.dials != 2 {
				t.Fatalf("leader epoch %d after %d connections, want %d after 2", f.leader.epoch, f.dials, want)
			}
			// While the metadata named the failed epoch, it was asked
			// every leaderPoll, not in a loop (which would ask hundreds of
			// times). The slack of 4 covers the lookups around the error
			// and a timer that fires late on a loaded machine.
			if n := len(metas()) - lookups; n > int(took/leaderPoll)+4 {
				t.Fatalf("%d metadata requests in %v", n, took)
			}
		})
	}
}

// A leader that says it is not the leader while the metadata keeps naming
// it is followed for a bounded time; then Fill returns the error, and the
// next call connects again.
func TestFetcherReturnsTheErrorWhenNoNewLeaderComes(t *testing.T) {
	kc, c, topic := startMoving(t, 1)
	metas := watch(kc, kmsg.Metadata)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := newMovingFetcher(c.Brokers, topic)
	f.followFor = 600 * time.Millisecond
	defer f.Close()
	produceN(t, c, topic, 0, 5)
	readN(t, ctx, f, 0, 5)
	lookups := len(metas())

	answerFetchOnce(kc, topic, int16(kafka.NotLeaderForPartition))
	start := time.Now()
	_, _, err := f.Next(ctx)
	took := time.Since(start)
	if !errors.Is(err, kafka.NotLeaderForPartition) || !strings.Contains(err.Error(), "no leader of moving/0") {
		t.Fatalf("Next: %v, want the leader's NOT_LEADER_OR_FOLLOWER after following it", err)
	}
	if took < f.followFor || took > f.followFor+3*time.Second {
		t.Fatalf("error after %v, want after following for %v", took, f.followFor)
	}
	if n := len(metas()) - lookups; n < 2 || n > int(took/leaderPoll)+2 {
		t.Fatalf("%d metadata requests in %v, want one every %v", n, took, leaderPoll)
	}
	produceN(t, c, topic, 5, 5)
	readN(t, ctx, f, 5, 5)
}

// A configured broker that accepts connections and never answers delays
// the lookup by lookupStagger, not by a timeout; once the cluster's
// brokers are known, configured ones that are gone do not matter.
func TestFetcherFindsTheLeaderPastDeadBrokers(t *testing.T) {
	kc, c, topic := startMoving(t, 3)
	silent := silentBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := newMovingFetcher([]string{silent, c.Brokers[0]}, topic)
	defer f.Close()
	produceN(t, c, topic, 0, 10)
	start := time.Now()
	readN(t, ctx, f, 0, 10)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("%v to the first message past a silent broker", took)
	}

	// Every configured broker gone: the brokers the metadata named remain.
	f.cfg.Brokers = []string{silent, "127.0.0.1:1"}
	if err := kc.MoveTopicPartition(topic, 0, (kc.LeaderFor(topic, 0)+1)%3); err != nil {
		t.Fatal(err)
	}
	produceN(t, c, topic, 10, 10)
	readN(t, ctx, f, 10, 10)
}

// silentBroker listens on a port, accepts connections and never answers.
func silentBroker(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

func TestPartitionLeaderReadsMetadata(t *testing.T) {
	resp := &metadata.Response{
		Brokers: []metadata.ResponseBroker{{NodeID: 1, Host: "b1", Port: 9092}, {NodeID: 2, Host: "b2", Port: 9093, Rack: "r2"}},
		Topics: []metadata.ResponseTopic{
			{Name: "other", Partitions: []metadata.ResponsePartition{{PartitionIndex: 3, LeaderID: 1, LeaderEpoch: 9}}},
			{Name: "events", Partitions: []metadata.ResponsePartition{
				{PartitionIndex: 0, LeaderID: 1, LeaderEpoch: 4},
				{PartitionIndex: 3, LeaderID: 2, LeaderEpoch: 7},
				{PartitionIndex: 4, LeaderID: -1, LeaderEpoch: 8, ErrorCode: int16(kafka.LeaderNotAvailable)},
				{PartitionIndex: 5, LeaderID: 6, LeaderEpoch: 8}, // a broker the response does not list
			}},
			{Name: "gone", ErrorCode: int16(kafka.UnknownTopicOrPartition)},
		},
	}
	for _, c := range []struct {
		topic     string
		partition int32
		version   int16
		want      leader
		err       error
	}{
		{"events", 3, 8, leader{kafka.Broker{ID: 2, Host: "b2", Port: 9093, Rack: "r2"}, 7}, nil},
		{"events", 3, 7, leader{kafka.Broker{ID: 2, Host: "b2", Port: 9093, Rack: "r2"}, 7}, nil},
		{"events", 3, 6, leader{kafka.Broker{ID: 2, Host: "b2", Port: 9093, Rack: "r2"}, -1}, nil}, // no epochs before v7
		{"events", 4, 8, leader{kafka.Broker{ID: -1}, 8}, kafka.LeaderNotAvailable},
		{"events", 5, 8, leader{kafka.Broker{ID: -1}, 8}, errNoLeader},
		{"events", 9, 8, leader{kafka.Broker{ID: -1}, -1}, kafka.UnknownTopicOrPartition},
		{"gone", 0, 8, leader{kafka.Broker{ID: -1}, -1}, kafka.UnknownTopicOrPartition},
		{"absent", 0, 8, leader{kafka.Broker{ID: -1}, -1}, nil},
	} {
		t.Run(fmt.Sprintf("%s/%d/v%d", c.topic, c.partition, c.version), func(t *testing.T) {
			l, brokers, err := partitionLeader(resp, c.version, c.topic, c.partition)
			if l != c.want {
				t.Fatalf("leader %+v, want %+v", l, c.want)
			}
			if fmt.Sprint(brokers) != "[b1:9092 b2:9093]" {
				t.Fatalf("brokers %v", brokers)
			}
			switch {
			case c.err != nil && !errors.Is(err, c.err):
				t.Fatalf("err %v, want %v", err, c.err)
			case c.err == nil && c.want.broker.ID >= 0 && err != nil:
				t.Fatal(err)
			case c.want.broker.ID < 0 && err == nil:
				t.Fatal("no error for a partition without a leader")
			}
		})
	}
}

func TestLeaderFailedAndReplaces(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{kafka.NotLeaderForPartition, true},
		{fmt.Errorf("wrapped: %w", kafka.FencedLeaderEpoch), true},
		{kafka.UnknownLeaderEpoch, true},
		{kafka.LeaderNotAvailable, true},
		{io.EOF, true},
		{io.ErrUnexpectedEOF, true},
		{&net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, true},
		{&net.OpError{Op: "read", Err: net.ErrClosed}, false}, // closed by the Fetcher: its context ended
		{kafka.OffsetOutOfRange, false},
		{kafka.RequestTimedOut, false}, // a kafka.Error is a net.Error too
		{errors.New("record batch at offset 5: CRC mismatch (corrupt data)"), false},
	} {
		if got := leaderFailed(c.err); got != c.want {
			t.Errorf("leaderFailed(%v) = %v, want %v", c.err, got, c.want)
		}
	}

	at := func(id int, epoch int32) leader { return leader{broker: kafka.Broker{ID: id}, epoch: epoch} }
	for _, c := range []struct {
		old, l leader
		why    error
		want   bool
	}{
		{at(1, 5), at(2, 6), kafka.NotLeaderForPartition, true},
		{at(1, 5), at(1, 5), kafka.NotLeaderForPartition, false}, // metadata that lags
		{at(1, 5), at(2, 5), kafka.FencedLeaderEpoch, false},
		{at(1, 5), at(1, 6), kafka.FencedLeaderEpoch, true},
		{at(1, 5), at(1, 5), kafka.LeaderNotAvailable, false},
		{at(1, 5), at(1, 5), kafka.UnknownLeaderEpoch, true}, // the broker is behind: ask again
		{at(1, 5), at(1, 5), io.EOF, true},                   // the leader's connection failed: reconnect
		{at(1, -1), at(1, -1), kafka.NotLeaderForPartition, true},
		{at(1, 5), at(-1, 6), io.EOF, false}, // no leader
	} {
		if got := replaces(c.old, c.l, c.why); got != c.want {
			t.Errorf("replaces(%+v, %+v, %v) = %v, want %v", c.old, c.l, c.why, got, c.want)
		}
	}
}

// Metadata lookups and leader connections go through the configured
// Dialer: TLS and SASL (SCRAM-SHA-256 here) on every broker, also when the
// partition moves.
func TestFetcherFollowsAMovedLeaderOverTLSAndSASL(t *testing.T) {
	srvTLS, pool := selfSignedTLS(t)
	kc, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(1, "moving"), kfake.TLS(srvTLS),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "ampstream", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clientTLS := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	prod, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DialTLSConfig(clientTLS),
		kgo.SASL(scram.Auth{User: "ampstream", Pass: "s3cret"}.AsSha256Mechanism()),
		kgo.DefaultProduceTopic("moving"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	produce := func(from, n int) {
		t.Helper()
		var recs []*kgo.Record
		for i := from; i < from+n; i++ {
			recs = append(recs, &kgo.Record{Key: []byte("k"), Value: []byte(fmt.Sprintf(`{"n":%d}`, i))})
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	mech, err := kscram.Mechanism(kscram.SHA256, "ampstream", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	f := New(Config{
		Dialer:  &kafka.Dialer{Timeout: 10 * time.Second, TLS: clientTLS, SASLMechanism: mech},
		Brokers: kc.ListenAddrs()[:1], Topic: "moving", MaxWait: 200 * time.Millisecond, Log: zerolog.Nop(),
	})
	defer f.Close()
	produce(0, 10)
	readN(t, ctx, f, 0, 10)
	if err := kc.MoveTopicPartition("moving", 0, (kc.LeaderFor("moving", 0)+1)%3); err != nil {
		t.Fatal(err)
	}
	produce(10, 10)
	readN(t, ctx, f, 10, 10)
	if f.dials != 2 || f.leader.epoch != 1 {
		t.Fatalf("%d leader connections, epoch %d; want 2, 1", f.dials, f.leader.epoch)
	}
}

// selfSignedTLS returns a server TLS config for 127.0.0.1 and the pool
// that trusts it.
func selfSignedTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, pool
}

// Metadata without the leader's epoch (a broker before Kafka 2.1, or one
// that does not know it): fetches carry epoch −1 and use Fetch v10, which
// only the leader serves, not v11.
func TestFetcherWithoutAnEpochFetchesOnlyFromTheLeader(t *testing.T) {
	kc, c, topic := startMoving(t, 1)
	fetches := watch(kc, kmsg.Fetch)
	var mu sync.Mutex
	versions := map[int16]bool{}
	kc.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		versions[req.GetVersion()] = true
		mu.Unlock()
		return nil, nil, false
	})
	host, port, err := net.SplitHostPort(c.Brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	portN, _ := strconv.Atoi(port)
	kc.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if r := req.(*kmsg.MetadataRequest); len(r.Topics) != 1 || r.Topics[0].Topic == nil || *r.Topics[0].Topic != topic {
			return nil, nil, false // the producer's
		}
		kc.KeepControl()
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		resp.Version = req.GetVersion()
		resp.Brokers = []kmsg.MetadataResponseBroker{{NodeID: 0, Host: host, Port: int32(portN)}}
		p := kmsg.NewMetadataResponseTopicPartition()
		p.Partition, p.Leader, p.LeaderEpoch, p.Replicas, p.ISR = 0, 0, -1, []int32{0}, []int32{0}
		rt := kmsg.NewMetadataResponseTopic()
		rt.Topic, rt.Partitions = kmsg.StringPtr(topic), []kmsg.MetadataResponseTopicPartition{p}
		resp.Topics = []kmsg.MetadataResponseTopic{rt}
		return resp, nil, true
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := newMovingFetcher(c.Brokers, topic)
	defer f.Close()
	produceN(t, c, topic, 0, 10)
	readN(t, ctx, f, 0, 10)
	mu.Lock()
	defer mu.Unlock()
	if f.leader.epoch != -1 || f.version != 10 || len(versions) != 1 || !versions[10] {
		t.Fatalf("leader epoch %d, Fetch v%d (versions sent %v); want -1, v10", f.leader.epoch, f.version, versions)
	}
	for _, s := range fetches() {
		if s.epoch != -1 {
			t.Fatalf("a fetch carried epoch %d", s.epoch)
		}
	}
}
