package testintegration

// A rolling upgrade on the 3-node cluster: members of a release built on
// kafka-go's ConsumerGroup (oldRelease, in this process) are replaced one at
// a time by `ampstream run` replicas, as a Kubernetes RollingUpdate does.
// While an old member is in the group the coordinator picks "range" and the
// new replicas are eager; once the last one has left they must be
// cooperative-sticky again (internal/group/DESIGN.md, Upgrading). Then the
// first step of a rollback: an old member joins the cooperative group.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/dlq"
	"github.com/ampstream/ampstream/internal/event"
	"github.com/ampstream/ampstream/internal/group"
)

// TestClusterChaosRollingUpgradeFromKafkaGoGroup runs two old-release
// members under load, then, twice: starts an ampstream replica, waits until
// it is ready and owns partitions, and closes one old member (a graceful
// LeaveGroup). Between the two replacements the group coordinator's broker
// is killed and restarted. Besides the chaos invariants it asserts that
// each replica's first generation was range and that the replicas end in
// one cooperative-sticky generation that owns every partition. Then it
// rolls back one step: an old member joins (the generation must turn range,
// with every partition owned once), and a replica leaves.
func TestClusterChaosRollingUpgradeFromKafkaGoGroup(t *testing.T) {
	r := newClusterRun(t, 57)
	olds := []*oldRelease{startOldRelease(r, "old-a"), startOldRelease(r, "old-b")}
	eventually(t, 60*time.Second, "the old members to own every partition", func() bool {
		return len(olds[0].owned())+len(olds[1].owned()) == clusterPartitions
	})
	r.steady("the old members delivering", 3000)

	began := time.Now()
	var (
		steps                    []string
		coord                    int
		coordRestart, writesBack time.Duration
		coordBack                time.Time
		left                     time.Time // the last old member's LeaveGroup
	)
	var news []*child
	for i, old := range olds {
		t0 := time.Now()
		k := r.startReplica("AMPSTREAM_LOG_LEVEL=info") // the group's protocol is logged at info
		news = append(news, k)
		eventually(t, 60*time.Second, fmt.Sprintf("new replica %d ready and owning partitions", i+1), func() bool {
			return readyz(k.admin) && len(ownedPartitions(k.admin)) > 0
		})
		ready := time.Since(t0)
		old.close()
		left = time.Now()
		steps = append(steps, fmt.Sprintf("%d:%s/%s", i+1, secs(ready), secs(time.Since(t0))))
		t.Logf("new replica %d ready and owning %s %ss after its start; %s closed", i+1, ints(ownedPartitions(k.admin)), secs(ready), old.name)
		if i == 0 {
			// Half-way, one old member and one replica in a range
			// generation: the coordinator's broker dies. kafka-go's member
			// ends its generation and rejoins at the new coordinator, so
			// both go through an eager rebalance.
			coord = r.c.coordinatorOf(r.h.group)
			t.Logf("killing group coordinator node %d", coord)
			t1 := time.Now()
			killed, back := r.killAndRestart(coord)
			coordRestart, writesBack = time.Since(t1), back.Sub(killed)
			coordBack = back
			// The next replica must join a mixed group again: the old
			// member rejoins under a new member id after the kill.
			eventually(t, 60*time.Second, "the old member owning partitions again", func() bool { return len(olds[1].owned()) > 0 })
		}
	}

	// The last old member has left: the replicas form a cooperative-sticky
	// generation between them and own every partition.
	var final []joined
	eventually(t, 60*time.Second, "the new replicas in one cooperative-sticky generation owning every partition", func() bool {
		final = final[:0]
		var all []int
		for _, k := range news {
			j, ok := lastJoined(k)
			if !ok || j.Protocol != group.Protocol || (len(final) > 0 && j.Generation != final[0].Generation) {
				return false
			}
			final = append(final, j)
			all = append(all, ownedPartitions(k.admin)...)
		}
		sort.Ints(all)
		return slices.Equal(all, seq(clusterPartitions))
	})
	upgrade, cooperative := time.Since(began), time.Since(left)
	owned := make([]string, len(news))
	for i, k := range news {
		owned[i] = ints(ownedPartitions(k.admin))
	}
	t.Logf("rolling upgrade done in %ss (cooperative %ss after the last old member left): generation %d, %s, partitions %s",
		secs(upgrade), secs(cooperative), final[0].Generation, final[0].Protocol, strings.Join(owned, " "))
	r.allCommitting("every partition committing after the upgrade")
	// The group's history as the replicas logged it.
	eagerRevokes := r.logCount("range (eager) protocol: revoking every partition")
	protocolChanges := r.logCount("consumer group assignment protocol changed")
	rangeGens, coopGens := 0, 0
	for i, k := range news {
		js := joinedLines(k)
		// Each replica joined while an old member was in the group: its
		// first generation must have been range (eager), or the test did
		// not test a mixed group.
		if js[0].Protocol != group.RangeProtocol {
			t.Errorf("new replica %d's first generation (%d) used %s, want %s: an old member was in the group", i+1, js[0].Generation, js[0].Protocol, group.RangeProtocol)
		}
		for _, j := range js {
			if j.Protocol == group.RangeProtocol {
				rangeGens++
			} else {
				coopGens++
			}
		}
	}

	// Rollback, first step: a pod of the old release joins the cooperative
	// group. The replicas still own every partition when the coordinator
	// picks range (the only protocol all offer): they revoke before their
	// SyncGroup, and the old member gets its share (DESIGN.md, Rollback).
	// Then one replica terminates, as the RollingUpdate goes on.
	failedBefore := r.logCount("final offset commit failed")
	t2 := time.Now()
	back := startOldRelease(r, "old-rollback")
	olds = append(olds, back)
	ownedOnce := func(parts ...[]int) bool {
		var all []int
		for _, p := range parts {
			all = append(all, p...)
		}
		sort.Ints(all)
		return slices.Equal(all, seq(clusterPartitions))
	}
	eventually(t, 60*time.Second, "the old member and both replicas in a range generation owning every partition once", func() bool {
		parts := [][]int{back.owned()}
		for _, k := range news {
			if j, ok := lastJoined(k); !ok || j.Protocol != group.RangeProtocol {
				return false
			}
			parts = append(parts, ownedPartitions(k.admin))
		}
		return len(parts[0]) > 0 && ownedOnce(parts...)
	})
	rangeAgain := time.Since(t2)
	news[0].term()
	eventually(t, 60*time.Second, "the old member and the last replica owning every partition once", func() bool {
		return ownedOnce(back.owned(), ownedPartitions(news[1].admin))
	})
	rollback := time.Since(t2)
	// The replicas revoke after their SyncGroup, when the group accepts
	// commits again: a revocation before it would fail its final commit
	// (REBALANCE_IN_PROGRESS) and leave the events to be delivered again.
	if n := r.logCount("final offset commit failed") - failedBefore; n > 0 {
		t.Errorf("%d final offset commits failed during the rollback step, want 0", n)
	}
	t.Logf("rollback step: range with the old member %ss after it started, replica 1 gone and partitions owned again %ss after it (old member %s, replica 2 %s)",
		secs(rangeAgain), secs(rollback), ints(back.owned()), ints(ownedPartitions(news[1].admin)))
	r.steady("delivering after the rollback step", 2000)

	rep, invalid, fs := r.finish(2000)
	for _, old := range olds {
		old.check(t)
	}
	gens, oldCommitFailed, oldFetchFailed := 0, 0, 0
	for _, old := range olds {
		g, c, f := old.counts()
		gens, oldCommitFailed, oldFetchFailed = gens+g, oldCommitFailed+c, oldFetchFailed+f
	}
	commitFailed, finalCommitFailed := r.logCount("offset commit failed"), r.logCount("final offset commit failed")
	r.h.chaosLine("cluster_rolling_upgrade", rep, invalid, append(fs.fields(),
		"upgrade_s="+secs(upgrade), "cooperative_s="+secs(cooperative), "steps="+strings.Join(steps, ","),
		fmt.Sprintf("coordinator=%d coordinator_restart_s=%s writes_back_s=%s resume_s=%s",
			coord, secs(coordRestart), secs(writesBack), secs(fs.resumeAfter(coordBack))),
		fmt.Sprintf("final_generation=%d final_protocol=%s old_generations=%d old_commit_failed=%d old_fetch_failed=%d range_joins=%d cooperative_joins=%d eager_revocations=%d protocol_changes=%d",
			final[0].Generation, final[0].Protocol, gens, oldCommitFailed, oldFetchFailed, rangeGens, coopGens, eagerRevokes, protocolChanges),
		"rollback_range_s="+secs(rangeAgain), "rollback_step_s="+secs(rollback),
		fmt.Sprintf("commit_failed=%d final_commit_failed=%d kafka_duplicate_writes=%d", commitFailed, finalCommitFailed, r.kafkaDuplicates()),
		"gaps_s="+r.partitionGaps(fs))...)
}

// partitionGaps is, per partition, the longest time without a delivery and
// the longest time without an acknowledged write, "p:delivery/write".
func (r *clusterRun) partitionGaps(fs flowStats) string {
	r.fl.mu.Lock()
	defer r.fl.mu.Unlock()
	out := make([]string, 0, clusterPartitions)
	for p := range clusterPartitions {
		out = append(out, fmt.Sprintf("%d:%s/%s", p, secs(longestGap(fs.arrivals[p])), secs(longestGap(r.fl.ackAt[p]))))
	}
	return strings.Join(out, ",")
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// readyz reports whether the replica's /readyz answers 200.
func readyz(admin string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/readyz", nil)
	if err != nil {
		return false
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// joined is a replica's "consumer group generation joined" log line.
type joined struct {
	Generation int    `json:"generation"`
	Protocol   string `json:"protocol"`
	Partitions int    `json:"partitions"`
}

// joinedLines reads every generation the replica joined from its log (info
// level).
func joinedLines(k *child) []joined {
	b, err := os.ReadFile(k.logPath)
	if err != nil {
		return nil
	}
	var out []joined
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"message":"consumer group generation joined"`)) {
			continue
		}
		var j joined
		if json.Unmarshal(line, &j) == nil {
			out = append(out, j)
		}
	}
	return out
}

func lastJoined(k *child) (joined, bool) {
	js := joinedLines(k)
	if len(js) == 0 {
		return joined{}, false
	}
	return js[len(js)-1], true
}

// --- a member of the old release ---------------------------------------------

// oldRelease is a member of an ampstream release built on kafka-go's
// ConsumerGroup (default balancers: range, roundrobin; eager): per
// generation one Reader per assigned partition; events are validated with
// the product's rules, invalid ones written to the DLQ with their source
// partition and offset, valid ones POSTed to the Batch API in bodies of at
// most oldBodyEvents or oldLinger; after each body it commits, through the
// generation, the offset after the last event Amplitude answered 200 for
// (or the DLQ took). A revoked partition drains: the body in flight (or
// open) gets one attempt, and what it answered 200 for is committed; the
// rest is read again by the next owner.
type oldRelease struct {
	name   string
	r      *clusterRun
	apiKey string
	cg     *kafka.ConsumerGroup
	dlq    *kafka.Writer
	http   *http.Client
	done   chan struct{}
	closed sync.Once

	mu   sync.Mutex
	own  []int // partitions of the current generation
	gens int
	// commitFailed counts commits the coordinator refused: their events
	// are read and sent again by the partition's next owner.
	commitFailed int
	fetchFailed  int // errors FetchMessage returned
	errs         []string
}

const (
	oldBodyEvents = 500
	oldLinger     = 200 * time.Millisecond
)

func startOldRelease(r *clusterRun, name string) *oldRelease {
	r.t.Helper()
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: r.h.group, Brokers: r.h.kafka.Brokers, Topics: []string{r.h.topic},
		HeartbeatInterval: time.Second, SessionTimeout: clusterSession, RebalanceTimeout: 15 * time.Second,
		JoinGroupBackoff: 500 * time.Millisecond, StartOffset: kafka.FirstOffset,
		// Its group errors are few (a rebalance, a coordinator move) and
		// say how it rejoined.
		ErrorLogger: kafka.LoggerFunc(func(format string, args ...any) {
			r.t.Logf("old member %s: "+format, append([]any{name}, args...)...)
		}),
	})
	if err != nil {
		r.t.Fatalf("old member %s: %v", name, err)
	}
	o := &oldRelease{
		name: name, r: r, apiKey: r.h.config().Amplitude.APIKey.Reveal(), cg: cg, done: make(chan struct{}),
		dlq: &kafka.Writer{
			Addr: kafka.TCP(r.h.kafka.Brokers...), Topic: r.h.dlq, RequiredAcks: kafka.RequireAll,
			BatchTimeout: 5 * time.Millisecond, WriteTimeout: 10 * time.Second,
		},
		http: &http.Client{Timeout: 10 * time.Second},
	}
	go o.run()
	r.t.Cleanup(o.close)
	return o
}

func (o *oldRelease) run() {
	defer close(o.done)
	for {
		gen, err := o.cg.Next(context.Background())
		if errors.Is(err, kafka.ErrGroupClosed) {
			return
		}
		if err != nil {
			continue // kafka-go rejoins by itself (after JoinGroupBackoff when it left)
		}
		var own []int
		for _, a := range gen.Assignments[o.r.h.topic] {
			own = append(own, a.ID)
			gen.Start(func(ctx context.Context) {
				o.partition(ctx, gen, a.ID, a.Offset)
			})
		}
		sort.Ints(own)
		o.mu.Lock()
		o.own, o.gens = own, o.gens+1
		o.mu.Unlock()
		// Ownership ends with the generation: kafka-go waits for every
		// started function before it rejoins.
		gen.Start(func(ctx context.Context) {
			<-ctx.Done()
			o.mu.Lock()
			o.own = nil
			o.mu.Unlock()
		})
	}
}

// close leaves the group (kafka-go ends the generation, waits for its
// partitions to stop, then sends LeaveGroup).
func (o *oldRelease) close() {
	o.closed.Do(func() {
		_ = o.cg.Close()
		<-o.done
		_ = o.dlq.Close()
		o.http.CloseIdleConnections()
	})
}

func (o *oldRelease) owned() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.own)
}

// counts are how many generations the member joined, how many of its
// commits failed and how many fetch errors its Readers reported.
func (o *oldRelease) counts() (gens, commitFailed, fetchFailed int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.gens, o.commitFailed, o.fetchFailed
}

// fail records an unexpected error (the first few of a kind are enough).
func (o *oldRelease) fail(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.errs) < 20 {
		o.errs = append(o.errs, fmt.Sprintf(format, args...))
	}
}

// check fails the test with the member's unexpected errors.
func (o *oldRelease) check(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range o.errs {
		t.Errorf("old member %s: %s", o.name, e)
	}
}

func (o *oldRelease) partition(ctx context.Context, gen *kafka.Generation, id int, offset int64) {
	rd := kafka.NewReader(kafka.ReaderConfig{
		Brokers: o.r.h.kafka.Brokers, Topic: o.r.h.topic, Partition: id,
		MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 250 * time.Millisecond,
	})
	defer func() { _ = rd.Close() }()
	if offset < 0 {
		offset = kafka.FirstOffset
	}
	if err := rd.SetOffset(offset); err != nil {
		o.fail("partition %d: set offset %d: %v", id, offset, err)
		return
	}
	var (
		events [][]byte
		dead   []kafka.Message
		next   int64 = -1 // offset after the last message of the body
		// linger ends the wait for more events of an open body.
		linger       context.Context
		stopLingerer = func() {}
	)
	defer func() { stopLingerer() }()
	flush := func() bool {
		stopLingerer()
		linger = nil
		if next < 0 {
			return true
		}
		if !o.deadLetter(ctx, dead) || !o.post(ctx, events) {
			return false
		}
		// Committed at once, through the generation: only what Amplitude
		// answered 200 for (or the DLQ took). A failed commit (the
		// generation is ending) leaves it to the next owner to read again.
		if err := gen.CommitOffsets(map[string]map[int]int64{o.r.h.topic: {id: next}}); err != nil {
			o.mu.Lock()
			o.commitFailed++
			o.mu.Unlock()
		}
		events, dead, next = events[:0], dead[:0], -1
		return true
	}
	for {
		fctx := ctx
		if linger != nil {
			fctx = linger
		}
		m, err := rd.FetchMessage(fctx)
		switch {
		case ctx.Err() != nil:
			// Revoked: drain (one attempt for the open body, no retry)
			// and commit, inside the generation, before kafka-go rejoins.
			flush()
			return
		case errors.Is(err, context.DeadlineExceeded):
			if !flush() {
				return
			}
			continue
		case err != nil:
			// The Reader reports a partition whose leader it failed to
			// reach a few times (a dead broker until the controller fences
			// it) and goes on trying: so does the member.
			o.mu.Lock()
			o.fetchFailed++
			o.mu.Unlock()
			if !retryPause(ctx) {
				flush()
				return
			}
			continue
		}
		if next < 0 {
			var cancel context.CancelFunc
			linger, cancel = context.WithTimeout(ctx, oldLinger)
			stopLingerer = cancel
		}
		if f, err := event.Parse(m.Value); err != nil {
			dead = append(dead, deadLetterOf(m, err))
		} else if err := f.Validate(event.DefaultMinIDLength); err != nil {
			dead = append(dead, deadLetterOf(m, err))
		} else {
			events = append(events, m.Value)
		}
		next = m.Offset + 1
		if len(events)+len(dead) >= oldBodyEvents && !flush() {
			return
		}
	}
}

// deadLetterOf is m as the DLQ stores it: the headers the harness matches
// source offsets by.
func deadLetterOf(m kafka.Message, err error) kafka.Message {
	return dlq.Record{Msg: m, Reason: string(event.ReasonOf(err)), Detail: err.Error()}.Message(time.Now())
}

// deadLetter writes msgs to the DLQ, retrying until it succeeds or ctx ends.
// An attempt is not cancelled by ctx (a revocation), only retries are: what
// is in flight when the partition is revoked finishes, as in a drain.
func (o *oldRelease) deadLetter(ctx context.Context, msgs []kafka.Message) bool {
	if len(msgs) == 0 {
		return true
	}
	for {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := o.dlq.WriteMessages(wctx, msgs...)
		cancel()
		if err == nil {
			return true
		}
		if !retryPause(ctx) {
			return false
		}
	}
}

// post sends events to the Batch API until it answers 200 or ctx ends (as
// deadLetter: ctx stops retries, not the request in flight). A
// 400 would repeat forever: it is recorded as a failure (the events were
// validated by the product's rules, so the emulator must take them).
func (o *oldRelease) post(ctx context.Context, events [][]byte) bool {
	if len(events) == 0 {
		return true
	}
	var body bytes.Buffer
	body.WriteString(`{"api_key":"` + o.apiKey + `","events":[`)
	body.Write(bytes.Join(events, []byte(",")))
	body.WriteString(`]}`)
	for {
		req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPost, o.r.h.emuURL+"/batch", bytes.NewReader(body.Bytes()))
		if err != nil {
			o.fail("request: %v", err)
			return false
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := o.http.Do(req)
		if err == nil {
			answer, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
			if resp.StatusCode == http.StatusBadRequest {
				o.fail("Amplitude answered 400: %s", answer)
			}
		}
		if !retryPause(ctx) {
			return false
		}
	}
}

// retryPause waits 100 ms before a retry; false if ctx ended first.
func retryPause(ctx context.Context) bool {
	tm := time.NewTimer(100 * time.Millisecond)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}
