package kafkatest

// These tests pin down the kafka-go v0.4.51 consumer-group behaviour that ampstream's consumer
// relies on (internal/consume/DESIGN.md records the results per broker). They run against
// whatever broker Start picks, so CI checks them against Apache Kafka and a laptop against kfake.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// groupConfig uses kafka-go's defaults for the timings under test (heartbeat 3 s, session 30 s)
// so the logged join/leave durations are what production sees.
func groupConfig(c *Cluster, group, topic string) kafka.ConsumerGroupConfig {
	return kafka.ConsumerGroupConfig{
		ID:          group,
		Brokers:     c.Brokers,
		Topics:      []string{topic},
		StartOffset: kafka.FirstOffset,
	}
}

func newGroup(t *testing.T, cfg kafka.ConsumerGroupConfig) *kafka.ConsumerGroup {
	t.Helper()
	cg, err := kafka.NewConsumerGroup(cfg)
	if err != nil {
		t.Fatalf("new consumer group: %v", err)
	}
	return cg
}

// nextGen loops on Next like a real consumer must: Next also hands out the group's join errors.
// On a broker that has just started, the first join gets GROUP_COORDINATOR_NOT_AVAILABLE while
// __consumer_offsets is created; kafka-go retries by itself after JoinGroupBackoff (5 s), but
// only once the error has been taken from Next.
func nextGen(t *testing.T, cg *kafka.ConsumerGroup) *kafka.Generation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		gen, err := cg.Next(ctx)
		if err == nil {
			return gen
		}
		var kerr kafka.Error
		if !errors.As(err, &kerr) || !kerr.Temporary() {
			t.Fatalf("consumer group Next: %v", err)
		}
		t.Logf("consumer group Next: %v (temporary, waiting for the next generation)", err)
	}
}

func partitionReader(c *Cluster, topic string, partition int, offset int64) (*kafka.Reader, error) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   c.Brokers,
		Topic:     topic,
		Partition: partition,
		MinBytes:  1,
		MaxBytes:  10 << 20, // kafka-go panics on MinBytes without MaxBytes
		MaxWait:   100 * time.Millisecond,
	})
	if err := r.SetOffset(offset); err != nil {
		r.Close()
		return nil, fmt.Errorf("set offset: %w", err)
	}
	return r, nil
}

func assigned(gen *kafka.Generation, topic string) []int {
	var ps []int
	for _, a := range gen.Assignments[topic] {
		ps = append(ps, a.ID)
	}
	sort.Ints(ps)
	return ps
}

// TestGroupCommitAndResume: commits are "next offset to read" (last processed + 1), and a
// member of a new incarnation of the group starts exactly there.
func TestGroupCommitAndResume(t *testing.T) {
	t.Parallel()
	c := Start(t)
	topic := c.CreateTopic(t, t.Name(), 3)
	for p := range 3 {
		var msgs []kafka.Message
		for i := range 10 {
			msgs = append(msgs, kafka.Message{Value: fmt.Appendf(nil, "p%d-%d", p, i)})
		}
		c.ProduceToPartition(t, topic, p, msgs...)
	}
	group := UniqueName("resume")

	// First incarnation: process 4 messages per partition, commit after each.
	firstJoin := time.Now()
	cg := newGroup(t, groupConfig(c, group, topic))
	gen := nextGen(t, cg)
	t.Logf("first join of a new group took %v", time.Since(firstJoin).Round(time.Millisecond))
	if got := assigned(gen, topic); len(got) != 3 {
		t.Fatalf("single member got partitions %v, want all 3", got)
	}
	type result struct {
		partition int
		offsets   []int64
		err       error
	}
	results := make(chan result, 3)
	// kafka-go ends the whole generation as soon as any function passed to gen.Start returns,
	// so each function waits here until every partition has been processed.
	allDone := make(chan struct{})
	for _, a := range gen.Assignments[topic] {
		if a.Offset != kafka.FirstOffset {
			t.Fatalf("partition %d: initial offset %d for a group without commits, want FirstOffset (%d)", a.ID, a.Offset, kafka.FirstOffset)
		}
		gen.Start(func(ctx context.Context) {
			res := result{partition: a.ID}
			defer func() {
				results <- res
				select {
				case <-allDone:
				case <-ctx.Done():
				}
			}()
			r, err := partitionReader(c, topic, a.ID, a.Offset)
			if err != nil {
				res.err = err
				return
			}
			defer r.Close()
			for range 4 {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					res.err = fmt.Errorf("fetch: %w", err)
					return
				}
				res.offsets = append(res.offsets, m.Offset)
				if err := gen.CommitOffsets(map[string]map[int]int64{topic: {a.ID: m.Offset + 1}}); err != nil {
					res.err = fmt.Errorf("commit: %w", err)
					return
				}
			}
		})
	}
	for range 3 {
		res := <-results
		if res.err != nil {
			t.Fatalf("partition %d: %v", res.partition, res.err)
		}
		if fmt.Sprint(res.offsets) != "[0 1 2 3]" {
			t.Fatalf("partition %d read offsets %v, want [0 1 2 3]", res.partition, res.offsets)
		}
	}
	close(allDone)
	closeStart := time.Now()
	if err := cg.Close(); err != nil {
		t.Fatalf("close group: %v", err)
	}
	t.Logf("ConsumerGroup.Close took %v", time.Since(closeStart).Round(time.Millisecond))
	if got, want := c.CommittedOffsets(t, group, topic), map[int]int64{0: 4, 1: 4, 2: 4}; !equalOffsets(got, want) {
		t.Fatalf("committed offsets %v, want %v (last processed offset 3, +1)", got, want)
	}

	// Second incarnation ("after a restart"): the generation hands out the committed offsets
	// and the first message read is offset 4.
	joinStart := time.Now()
	cg2 := newGroup(t, groupConfig(c, group, topic))
	defer cg2.Close()
	gen2 := nextGen(t, cg2)
	t.Logf("rejoin after a graceful close took %v", time.Since(joinStart).Round(time.Millisecond))
	for _, a := range gen2.Assignments[topic] {
		if a.Offset != 4 {
			t.Fatalf("partition %d: resumed at %d, want the committed 4", a.ID, a.Offset)
		}
		r, err := partitionReader(c, topic, a.ID, a.Offset)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		m, err := r.FetchMessage(ctx)
		cancel()
		r.Close()
		if err != nil {
			t.Fatalf("partition %d: fetch after resume: %v", a.ID, err)
		}
		if m.Offset != 4 || string(m.Value) != fmt.Sprintf("p%d-4", a.ID) {
			t.Fatalf("partition %d: first message after resume is %d %q, want 4 %q", a.ID, m.Offset, m.Value, fmt.Sprintf("p%d-4", a.ID))
		}
	}
}

// member runs the ampstream consumer shape: one function per assigned partition started with
// gen.Start, each reading with its own Reader until the generation ends.
type member struct {
	t     *testing.T
	c     *Cluster
	topic string
	gen   *kafka.Generation
	// release, when set, holds every partition function after the generation ended until it
	// is closed: a stand-in for slow in-flight work.
	release chan struct{}
	stopped chan struct{} // one send per partition function that saw the generation end

	mu         sync.Mutex
	ended      time.Time // when the first partition function saw ctx.Done
	fetchErrs  []error   // what FetchMessage returned once the generation ended
	lateCommit []error   // CommitOffsets called after ctx.Done, before returning
	wg         sync.WaitGroup
}

func startMember(t *testing.T, c *Cluster, topic string, gen *kafka.Generation, release chan struct{}) *member {
	m := &member{t: t, c: c, topic: topic, gen: gen, release: release, stopped: make(chan struct{}, len(gen.Assignments[topic]))}
	for _, a := range gen.Assignments[topic] {
		m.wg.Add(1)
		gen.Start(func(ctx context.Context) {
			defer m.wg.Done()
			r, err := partitionReader(c, topic, a.ID, a.Offset)
			if err != nil {
				m.record(err, nil)
				return
			}
			defer r.Close()
			next := max(a.Offset, 0) // FirstOffset is -2; this topic starts at 0
			for {
				msg, err := r.FetchMessage(ctx)
				if err != nil {
					// The generation ended: a commit here, before returning, is the last
					// chance to commit in this generation.
					cerr := gen.CommitOffsets(map[string]map[int]int64{topic: {a.ID: next}})
					m.record(err, cerr)
					if m.release != nil {
						<-m.release
					}
					return
				}
				next = msg.Offset + 1
			}
		})
	}
	return m
}

func (m *member) record(fetchErr, commitErr error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ended.IsZero() {
		m.ended = time.Now()
	}
	m.fetchErrs = append(m.fetchErrs, fetchErr)
	m.lateCommit = append(m.lateCommit, commitErr)
	m.stopped <- struct{}{}
}

// TestGroupRebalanceTwoMembers: a second member joining ends the first member's generation
// (reads fail with ErrGenerationEnded, commits before returning still succeed), the partitions
// are split, a commit on the ended generation fails, and a graceful leave hands everything back.
func TestGroupRebalanceTwoMembers(t *testing.T) {
	t.Parallel()
	c := Start(t)
	topic := c.CreateTopic(t, t.Name(), 4)
	group := UniqueName("rebalance")
	for p := range 4 {
		c.ProduceToPartition(t, topic, p, kafka.Message{Value: []byte("a")}, kafka.Message{Value: []byte("b")}, kafka.Message{Value: []byte("c")})
	}

	start := time.Now()
	cgA := newGroup(t, groupConfig(c, group, topic))
	defer cgA.Close()
	genA1 := nextGen(t, cgA)
	t.Logf("first member joined (generation %d) in %v", genA1.ID, time.Since(start).Round(time.Millisecond))
	if got := assigned(genA1, topic); len(got) != 4 {
		t.Fatalf("single member got %v, want all 4 partitions", got)
	}
	// Give partition 0 a commit in generation 1 so the hand-over check below has a value.
	if err := genA1.CommitOffsets(map[string]map[int]int64{topic: {0: 0}}); err != nil {
		t.Fatalf("commit in a live generation: %v", err)
	}
	release := make(chan struct{})
	a1 := startMember(t, c, topic, genA1, release)

	joinStart := time.Now()
	cgB := newGroup(t, groupConfig(c, group, topic))
	genB := make(chan *kafka.Generation, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		g, err := cgB.Next(ctx)
		if err != nil {
			t.Errorf("second member Next: %v", err)
		}
		genB <- g
	}()

	// A's partition functions all see the generation end ...
	for range 4 {
		select {
		case <-a1.stopped:
		case <-time.After(time.Minute):
			t.Fatal("first member's generation did not end within a minute of a second member joining")
		}
	}
	// ... but while they have not returned, kafka-go does not rejoin, so the broker keeps the
	// rebalance open and the second member gets no generation either.
	select {
	case <-genB:
		t.Fatal("second member got a generation while the first member's functions were still running")
	case <-time.After(time.Second):
	}
	close(release)
	waitDone := make(chan struct{})
	go func() { a1.wg.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(time.Minute):
		t.Fatal("first member's generation did not end within a minute of a second member joining")
	}
	t.Logf("first member's generation ended %v after the second member started", a1.ended.Sub(joinStart).Round(time.Millisecond))
	for i, err := range a1.fetchErrs {
		if !errors.Is(err, kafka.ErrGenerationEnded) {
			t.Errorf("read after generation end returned %v, want ErrGenerationEnded", err)
		}
		// The broker is waiting for this member to rejoin (PreparingRebalance), so a commit
		// with the old generation ID is still accepted.
		if a1.lateCommit[i] != nil {
			t.Errorf("commit after ctx.Done, before returning from Start's function: %v, want accepted", a1.lateCommit[i])
		}
	}

	genA2 := nextGen(t, cgA)
	gB := <-genB
	if gB == nil {
		t.FailNow()
	}
	defer cgB.Close()
	t.Logf("rebalance to two members took %v (generations A %d→%d, B %d)", time.Since(joinStart).Round(time.Millisecond), genA1.ID, genA2.ID, gB.ID)
	pa, pb := assigned(genA2, topic), assigned(gB, topic)
	if len(pa)+len(pb) != 4 || len(pa) == 0 || len(pb) == 0 {
		t.Fatalf("after the join A has %v and B has %v, want the 4 partitions split", pa, pb)
	}
	seen := map[int]bool{}
	for _, p := range append(append([]int{}, pa...), pb...) {
		if seen[p] {
			t.Fatalf("partition %d assigned twice: A %v, B %v", p, pa, pb)
		}
		seen[p] = true
	}
	// The commits made after ctx.Done were stored: each partition function had read all 3
	// messages, so the next offset is 3 everywhere, and the new generation starts there.
	if got, want := c.CommittedOffsets(t, group, topic), map[int]int64{0: 3, 1: 3, 2: 3, 3: 3}; !equalOffsets(got, want) {
		t.Fatalf("committed offsets after the rebalance %v, want %v", got, want)
	}
	for _, g := range []*kafka.Generation{genA2, gB} {
		for _, a := range g.Assignments[topic] {
			if a.Offset != 3 {
				t.Fatalf("generation %d starts partition %d at %d, want the committed 3", g.ID, a.ID, a.Offset)
			}
		}
	}
	// A commit on the ended generation is refused, and not with ErrGenerationEnded: kafka-go
	// closed the generation's coordinator connection when the generation ended.
	err := genA1.CommitOffsets(map[string]map[int]int64{topic: {0: 1}})
	if err == nil {
		t.Fatal("commit on an ended generation succeeded, want an error")
	}
	t.Logf("commit on an ended generation: %v (ErrGenerationEnded: %v)", err, errors.Is(err, kafka.ErrGenerationEnded))

	// Graceful leave: B closes, A gets everything back.
	a2 := startMember(t, c, topic, genA2, nil)
	leaveStart := time.Now()
	if err := cgB.Close(); err != nil {
		t.Fatalf("close second member: %v", err)
	}
	a2.wg.Wait()
	genA3 := nextGen(t, cgA)
	t.Logf("graceful leave: first member's generation ended after %v, next generation %d after %v",
		a2.ended.Sub(leaveStart).Round(time.Millisecond), genA3.ID, time.Since(leaveStart).Round(time.Millisecond))
	if got := assigned(genA3, topic); len(got) != 4 {
		t.Fatalf("after the leave A has %v, want all 4 partitions", got)
	}
}
