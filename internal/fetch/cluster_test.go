package fetch

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The tests of this file run against a real Apache Kafka cluster of three
// or more brokers, whose partitions have followers to move leadership to,
// and only when FETCH_CLUSTER_BROKERS names its brokers (comma-separated):
//
//	FETCH_CLUSTER_BROKERS=127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094 \
//	FETCH_CLUSTER_STOP='kill -TERM $(cat /path/to/node%d.pid)' \
//	go test -count=1 -v -run Cluster ./internal/fetch/
//
// FETCH_CLUSTER_STOP is a shell command that stops broker %d (SIGTERM for
// a graceful stop, SIGKILL for a crash) and returns once it has exited;
// the test that needs it is skipped without it. The stopped broker stays down: restart it before the
// next run.

func clusterBrokers(t *testing.T) []string {
	t.Helper()
	s := os.Getenv("FETCH_CLUSTER_BROKERS")
	if s == "" {
		t.Skip("FETCH_CLUSTER_BROKERS is not set")
	}
	return strings.Split(s, ",")
}

// clusterTopic creates a one-partition topic replicated to three brokers,
// with min.insync.replicas 2, and returns its name.
func clusterTopic(t *testing.T, ctx context.Context, cl *kgo.Client, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, 1, 3
	minISR := "2"
	rt.Configs = []kmsg.CreateTopicsRequestTopicConfig{{Name: "min.insync.replicas", Value: &minISR}}
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 30_000
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.Topics[0].ErrorCode)
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		p, _, err := clusterPartition(ctx, cl, name)
		if err == nil && p.Leader >= 0 && len(p.ISR) == 3 {
			return name
		}
		if time.Now().After(deadline) {
			t.Fatalf("topic %s: no leader and full ISR after 30 s (%v)", name, err)
		}
		time.Sleep(100 * time.Millisecond) // polled: nothing signals the ISR
	}
}

// clusterPartition returns partition 0 of topic as the cluster's metadata
// has it, and the addresses of the brokers by node id.
func clusterPartition(ctx context.Context, cl *kgo.Client, topic string) (kmsg.MetadataResponseTopicPartition, map[int32]string, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return kmsg.MetadataResponseTopicPartition{}, nil, err
	}
	addrs := map[int32]string{}
	for _, b := range resp.Brokers {
		addrs[b.NodeID] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return kmsg.MetadataResponseTopicPartition{}, addrs, fmt.Errorf("metadata of %s: %+v", topic, resp.Topics)
	}
	p := resp.Topics[0].Partitions[0]
	return p, addrs, kerr.ErrorForCode(p.ErrorCode)
}

// moveLeader makes the first follower of partition 0 of topic its leader:
// it becomes the preferred replica, then is elected.
func moveLeader(t *testing.T, ctx context.Context, cl *kgo.Client, topic string, p kmsg.MetadataResponseTopicPartition) int32 {
	t.Helper()
	var replicas []int32
	for _, r := range p.Replicas {
		if r != p.Leader {
			replicas = append(replicas, r)
		}
	}
	replicas = append(replicas, p.Leader)
	alter := kmsg.NewPtrAlterPartitionAssignmentsRequest()
	at := kmsg.NewAlterPartitionAssignmentsRequestTopic()
	at.Topic = topic
	ap := kmsg.NewAlterPartitionAssignmentsRequestTopicPartition()
	ap.Partition, ap.Replicas = 0, replicas
	at.Partitions = append(at.Partitions, ap)
	alter.Topics = append(alter.Topics, at)
	alter.TimeoutMillis = 30_000
	aresp, err := alter.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(aresp.ErrorCode)
	}
	if err == nil {
		err = kerr.ErrorForCode(aresp.Topics[0].Partitions[0].ErrorCode)
	}
	if err != nil {
		t.Fatalf("reorder the replicas of %s/0 to %v: %v", topic, replicas, err)
	}
	elect := kmsg.NewPtrElectLeadersRequest()
	et := kmsg.NewElectLeadersRequestTopic()
	et.Topic, et.Partitions = topic, []int32{0}
	elect.Topics = append(elect.Topics, et)
	elect.TimeoutMillis = 30_000
	eresp, err := elect.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(eresp.ErrorCode)
	}
	if err == nil {
		err = kerr.ErrorForCode(eresp.Topics[0].Partitions[0].ErrorCode)
	}
	if err != nil {
		t.Fatalf("elect %d the leader of %s/0: %v", replicas[0], topic, err)
	}
	return replicas[0]
}

// What Apache Kafka answers to a fetch waiting at the log end (MaxWait)
// on the leader when leadership moves to another broker, which stays up,
// with and without the leader epoch, in Fetch v10 and v11 (v11 names a
// rack: a consumer's fetch may then be served by a follower, KIP-392). The
// answers are logged; that a fetch carrying the epoch is answered at once
// is checked.
func TestClusterParkedFetchWhenLeadershipMoves(t *testing.T) {
	brokers := clusterBrokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topic := clusterTopic(t, ctx, cl, "parked")
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	const maxWait = 15 * time.Second
	for _, v := range []struct {
		version int16
		epoch   bool
	}{{10, false}, {10, true}, {11, false}, {11, true}} {
		p, addrs, err := clusterPartition(ctx, cl, topic)
		if err != nil {
			t.Fatal(err)
		}
		epoch := int32(-1)
		if v.epoch {
			epoch = p.LeaderEpoch
		}
		conn, err := net.Dial("tcp", addrs[p.Leader])
		if err != nil {
			t.Fatal(err)
		}
		req := appendFetchRequest(nil, v.version, 1, "probe", topic, 0, epoch, 1, maxWait, 1, 1<<20, kafka.ReadUncommitted)
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		type answer struct {
			at  time.Time
			err error
		}
		answered := make(chan answer, 1)
		go func() {
			_ = conn.SetDeadline(time.Now().Add(maxWait + 10*time.Second))
			var aborted []abortedTxn
			_, err := readResponseHead(&response{r: bufio.NewReader(conn)}, v.version, 1, topic, 0, &aborted)
			answered <- answer{time.Now(), err}
		}()
		time.Sleep(time.Second) // the fetch is parked: nothing to read at offset 1
		moved := moveLeader(t, ctx, cl, topic, p)
		elected := time.Now()
		a := <-answered
		_ = conn.Close()
		after := a.at.Sub(elected).Round(time.Millisecond)
		t.Logf("Fetch v%d, epoch %d, parked on leader %d; leader %d elected: answered %v later with %v",
			v.version, epoch, p.Leader, moved, after, a.err)
		if v.epoch && after > time.Second {
			t.Errorf("a fetch with the leader epoch was held %v after leadership moved", after)
		}

		// A new fetch from the start of the log to the former leader.
		conn, err = net.Dial("tcp", addrs[p.Leader])
		if err != nil {
			t.Fatal(err)
		}
		req = appendFetchRequest(nil, v.version, 2, "probe", topic, 0, epoch, 0, 100*time.Millisecond, 1, 1<<20, kafka.ReadUncommitted)
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		var aborted []abortedTxn
		pd, err := readResponseHead(&response{r: bufio.NewReader(conn)}, v.version, 2, topic, 0, &aborted)
		_ = conn.Close()
		t.Logf("Fetch v%d, epoch %d, from offset 0 on the former leader %d: %d bytes of records, %v", v.version, epoch, p.Leader, pd.records, err)
	}
}

// A Fetcher reading a partition under light produce load, whose leader is
// stopped gracefully: the time from the producer being acknowledged again
// to the Fetcher returning new messages, and every offset read once, in
// order.
func TestClusterFetcherFollowsAStoppedLeader(t *testing.T) {
	brokers := clusterBrokers(t)
	stop := os.Getenv("FETCH_CLUSTER_STOP")
	if stop == "" {
		t.Skip("FETCH_CLUSTER_STOP is not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topic := clusterTopic(t, ctx, admin, "stopped")
	p, _, err := clusterPartition(ctx, admin, topic)
	if err != nil {
		t.Fatal(err)
	}

	// The producer: one record every 20 ms, each waited for (acks=all).
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var mu sync.Mutex
	var acks []time.Time // by offset
	pctx, stopProducing := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for n := 0; pctx.Err() == nil; n++ {
			r, err := prod.ProduceSync(pctx, &kgo.Record{Value: []byte(strconv.Itoa(n))}).First()
			if err != nil {
				if pctx.Err() == nil {
					t.Errorf("produce %d: %v", n, err)
				}
				return
			}
			mu.Lock()
			for int64(len(acks)) <= r.Offset {
				acks = append(acks, time.Time{})
			}
			acks[r.Offset] = time.Now()
			mu.Unlock()
			select {
			case <-tick.C:
			case <-pctx.Done():
			}
		}
	})

	// The fetcher, backing off as the consumer does when Fill fails.
	var reads []time.Time // by offset
	var fillErrs []error
	fctx, stopFetching := context.WithCancel(ctx)
	f := New(Config{
		Dialer: &kafka.Dialer{Timeout: 10 * time.Second}, Brokers: brokers, Topic: topic,
		MaxWait: 2 * time.Second, Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	wg.Go(func() {
		defer f.Close()
		var msgs []kafka.Message
		failures := 0
		for fctx.Err() == nil {
			var err error
			msgs, _, err = f.Fill(fctx, msgs[:0], 64)
			if err != nil {
				if fctx.Err() == nil {
					mu.Lock()
					fillErrs = append(fillErrs, err)
					mu.Unlock()
					time.Sleep(100 * time.Millisecond << min(failures, 4))
					failures++
				}
				continue
			}
			failures = 0
			now := time.Now()
			mu.Lock()
			for _, m := range msgs {
				if m.Offset != int64(len(reads)) {
					t.Errorf("read offset %d after %d offsets", m.Offset, len(reads))
				}
				reads = append(reads, now)
			}
			mu.Unlock()
		}
	})

	time.Sleep(3 * time.Second) // steady reading before the stop
	stopped := time.Now()
	cmd := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf(stop, p.Leader))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", cmd, err, out)
	}
	exited := time.Now()
	// Producing to the new leader: acknowledged after the broker exited
	// (a crashed one's partitions move only once the controller notices),
	// then 3 s more.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		again := len(acks) > 0 && acks[len(acks)-1].After(exited)
		mu.Unlock()
		if again {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the producer was not acknowledged within 60 s of the broker's exit")
		}
	}
	time.Sleep(3 * time.Second) // a steady state on the new leader
	stopProducing()
	// Every acknowledged record is read.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		done := len(reads) >= len(acks)
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fetcher did not read every acknowledged record within 30 s")
		}
	}
	stopFetching()
	wg.Wait()

	// The pause of each side: the longest gap between consecutive
	// acknowledgements (reads) after the stop began, and when it ended.
	gap := func(ts []time.Time) (time.Duration, time.Time) {
		var longest time.Duration
		var end time.Time
		for i := 1; i < len(ts); i++ {
			if ts[i].Before(stopped) || ts[i-1].IsZero() || ts[i].IsZero() {
				continue
			}
			if d := ts[i].Sub(ts[i-1]); d > longest {
				longest, end = d, ts[i]
			}
		}
		return longest, end
	}
	ackGap, acked := gap(acks)
	readGap, read := gap(reads)
	t.Logf("leader %d stopped (%v to exit); producer paused %v, acknowledged again %v after the stop began; fetcher paused %v, read again %v after the stop began: %v after the producer; %d records, Fill errors %v",
		p.Leader, exited.Sub(stopped).Round(time.Millisecond), ackGap.Round(time.Millisecond), acked.Sub(stopped).Round(time.Millisecond),
		readGap.Round(time.Millisecond), read.Sub(stopped).Round(time.Millisecond), read.Sub(acked).Round(time.Millisecond), len(reads), fillErrs)
	if d := read.Sub(acked); d > 2*time.Second {
		t.Errorf("the fetcher read again %v after the producer was acknowledged again", d)
	}
}
