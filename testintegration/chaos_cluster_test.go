package testintegration

// Cluster chaos: two `ampstream run` replicas in one group on a 3-node
// Apache Kafka cluster (kafka-cluster.sh), ~800 events/s into a topic of
// 12 partitions at replication factor 3, while brokers die, stop, restart
// or answer slowly, and while replicas restart or die. Every scenario ends
// with the chaos suite's proof (chaosFinish) and logs a CHAOS line with the
// delivery stall, the produce→Amplitude latency and how long ampstream took
// to deliver again once Kafka accepted writes again. The cluster tests never
// run in parallel: they share the cluster and stop its nodes.
//
//	KAFKA_CLUSTER_BROKERS=$(testintegration/kafka-cluster.sh start) \
//	KAFKA_CLUSTER_CTL=testintegration/kafka-cluster.sh \
//	go test -race -count=1 -v -run '^TestClusterChaos' ./testintegration/

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/traffic"
)

const (
	clusterPartitions = 12
	clusterRate       = 800 // events a second
	// clusterSession is the group session timeout the replicas run with
	// (the product default the group-membership work moves to).
	clusterSession = 10 * time.Second
)

// clusterRun is one cluster scenario: the cluster, the harness on an RF 3
// topic, the producer with its acknowledgement log, and the replicas.
type clusterRun struct {
	t    *testing.T
	c    *kafkaCluster
	h    *harness
	g    *traffic.Generator
	p    *producer
	fl   *flow
	bin  string
	kids []*child // every replica started, dead ones included (their logs count)
}

// newClusterRun sets a scenario up and starts the traffic.
func newClusterRun(t *testing.T, seed uint64) *clusterRun {
	t.Helper()
	r := setupClusterRun(t, seed)
	r.startTraffic()
	return r
}

// setupClusterRun creates the topics, the group name and the emulator; no
// traffic yet.
func setupClusterRun(t *testing.T, seed uint64) *clusterRun {
	t.Helper()
	c := clusterFromEnv(t)
	bin := buildAmpstream(t)
	h := newHarnessTopics(t, c.kafkatest(), c.createTopic("events", clusterPartitions), c.createTopic("dlq", 1), clusterPartitions, nil)
	// Every event has an insert_id: a produce retried across a leader move
	// may land twice in Kafka, and Amplitude's dedup must absorb it.
	return &clusterRun{t: t, c: c, h: h, g: traffic.New(seed, 400, 0, nil), fl: newFlow(), bin: bin}
}

func (r *clusterRun) startTraffic() {
	r.p = startProducerAcked(r.h, r.g, clusterRate, r.fl.record)
}

// startReplica starts an `ampstream run` child with the cluster timings;
// extra ("KEY=value") wins.
func (r *clusterRun) startReplica(extra ...string) *child {
	r.t.Helper()
	env := append([]string{
		"AMPSTREAM_KAFKA_SESSION_TIMEOUT=" + clusterSession.String(),
		"AMPSTREAM_KAFKA_HEARTBEAT_INTERVAL=1s",
	}, extra...)
	k := r.h.startChild(r.bin, env...)
	r.kids = append(r.kids, k)
	return k
}

// steady waits until n more events were stored.
func (r *clusterRun) steady(what string, n int64) {
	r.t.Helper()
	from := r.h.emu.Stats().Ingested
	eventually(r.t, 90*time.Second, what, func() bool { return r.h.emu.Stats().Ingested >= from+n })
}

// allCommitting waits until every partition's committed offset moved past
// its value now, i.e. every partition is owned and delivering.
func (r *clusterRun) allCommitting(what string) time.Time {
	r.t.Helper()
	before := r.h.committedSnapshot()
	eventually(r.t, 120*time.Second, what, func() bool { return allAdvanced(before, r.h.committedSnapshot()) })
	return time.Now()
}

// finish produces n more events, stops the producer, proves the chaos
// invariants, stops the live replicas and returns the figures.
func (r *clusterRun) finish(n int) (traffic.Report, int, flowStats) {
	r.t.Helper()
	v0, _, _ := r.p.counts()
	eventually(r.t, 60*time.Second, fmt.Sprintf("%d more events produced", n), func() bool {
		v, _, _ := r.p.counts()
		return v >= v0+n
	})
	valid, invalid := r.p.stop()
	rep := r.h.chaosFinish(r.g.Expected(), valid, 120*time.Second)
	for _, k := range r.kids {
		if k.alive() {
			k.term()
		}
	}
	return rep, invalid, r.fl.analyse(r.h.emu)
}

// logCount sums a log line count over every replica.
func (r *clusterRun) logCount(s string) int {
	n := 0
	for _, k := range r.kids {
		n += k.logCount(s)
	}
	return n
}

// kafkaDuplicates counts messages in the source topic whose insert_id an
// earlier message already had: the producer's retried writes. Amplitude
// answers each of them as a duplicate, so they are not ampstream's.
func (r *clusterRun) kafkaDuplicates() int {
	seen := map[string]bool{}
	dups := 0
	for _, m := range r.h.kafka.ReadAll(r.t, r.h.topic) {
		id := insertIDOf(m.Value)
		if id == "" {
			continue
		}
		if seen[id] {
			dups++
		}
		seen[id] = true
	}
	return dups
}

// --- scenarios --------------------------------------------------------------

// TestClusterChaosKillPartitionLeader SIGKILLs a broker that leads
// partitions of the topic but does not coordinate the group, then restarts
// it. Kafka moves the leaderships once the controller fences the dead
// broker (broker.session.timeout.ms, 9 s); ampstream must follow them.
func TestClusterChaosKillPartitionLeader(t *testing.T) {
	r := newClusterRun(t, 51)
	r.startReplica()
	r.startReplica()
	r.steady("two replicas delivering", 3000)
	coord := r.c.coordinatorOf(r.h.group)
	victim := mostLeader(r.c.leaders(r.h.topic), coord)
	t.Logf("group coordinator node %d; killing node %d", coord, victim)
	killed, back := r.killAndRestart(victim)
	rep, invalid, fs := r.finish(2000)
	r.h.chaosLine("cluster_kill_leader", rep, invalid, append(fs.fields(),
		fmt.Sprintf("victim=%d coordinator=%d", victim, coord),
		"writes_back_s="+secs(back.Sub(killed)),
		"resume_s="+secs(fs.resumeAfter(back)))...)
}

// TestClusterChaosKillCoordinator SIGKILLs the broker coordinating the
// group, then restarts it. Target: ampstream delivers on every partition
// again within 5 s of Kafka accepting writes again.
func TestClusterChaosKillCoordinator(t *testing.T) {
	r := newClusterRun(t, 52)
	r.startReplica()
	r.startReplica()
	r.steady("two replicas delivering", 3000)
	coord := r.c.coordinatorOf(r.h.group)
	t.Logf("killing group coordinator node %d", coord)
	killed, back := r.killAndRestart(coord)
	newCoord := r.c.coordinatorOf(r.h.group)
	rep, invalid, fs := r.finish(2000)
	resume := fs.resumeAfter(back)
	r.h.chaosLine("cluster_kill_coordinator", rep, invalid, append(fs.fields(),
		fmt.Sprintf("coordinator=%d new_coordinator=%d", coord, newCoord),
		"writes_back_s="+secs(back.Sub(killed)),
		"resume_s="+secs(resume),
		fmt.Sprintf("join_failures=%d", r.logCount("consumer group join failed")))...)
	if resume < 0 || resume > 5*time.Second {
		missedTarget(t, "ampstream delivered on every partition again %ss after Kafka accepted writes again, want ≤ 5s", secs(resume))
	}
}

// killAndRestart SIGKILLs node n under load, waits until Kafka takes writes
// again and every partition commits again, then restarts the node and waits
// until its replicas are back in sync. It returns when the node was killed
// and when Kafka acknowledged writes on every partition again. (A moving
// commit is not delivery: a commit that failed during the fault may go
// through before the partition delivers again, so resume_s is measured on
// deliveries.)
func (r *clusterRun) killAndRestart(n int) (killed, back time.Time) {
	r.t.Helper()
	killed = time.Now()
	r.c.kill(n)
	dead := time.Now() // the JVM is gone: no acknowledgement from it after this
	r.t.Logf("node %d killed; cluster writable again after %s", n, secs(r.c.waitWritable(r.h.topic, 90*time.Second)))
	r.allCommitting("every partition committing again after the kill")
	back = r.fl.writesBack(dead)
	r.c.startNode(n)
	r.c.waitISR()
	return killed, back
}

// TestClusterChaosRollingRestart restarts the three brokers one after the
// other, gracefully (SIGTERM: controlled shutdown moves leaderships and the
// group coordinator first), each back in the ISR before the next. Targets:
// no partition pauses more than 2 s longer than the producer does, and no
// final commit is lost to a coordinator move.
func TestClusterChaosRollingRestart(t *testing.T) {
	r := newClusterRun(t, 53)
	r.startReplica()
	r.startReplica()
	r.steady("two replicas delivering", 3000)
	var downs []string
	for n := 1; n <= clusterNodes; n++ {
		t0 := time.Now()
		r.c.term(n)
		stopped := time.Since(t0)
		r.c.startNode(n)
		r.c.waitISR()
		downs = append(downs, fmt.Sprintf("%d:%s/%s", n, secs(stopped), secs(time.Since(t0))))
		r.steady(fmt.Sprintf("delivery after node %d's restart", n), 500)
	}
	rep, invalid, fs := r.finish(2000)
	lostFinal := r.logCount("final offset commit failed")
	failedCommits := r.logCount("offset commit failed")
	dups := r.kafkaDuplicates()
	s := r.h.emu.Stats()
	r.h.chaosLine("cluster_rolling_restart", rep, invalid, append(fs.fields(),
		"restarts="+strings.Join(downs, ","),
		fmt.Sprintf("final_commit_failed=%d commit_failed=%d kafka_duplicate_writes=%d redelivered_by_ampstream=%d",
			lostFinal, failedCommits, dups, s.Duplicates-int64(dups)))...)
	if fs.excess > 2*time.Second {
		missedTarget(t, "partition %d paused %ss, %ss longer than the producer's longest pause on it, want ≤ 2s longer",
			fs.excessPart, secs(fs.excessGap), secs(fs.excess))
	}
	if lostFinal > 0 {
		missedTarget(t, "%d final offset commits failed during the rolling restart, want 0", lostFinal)
	}
}

// TestClusterChaosStaticMemberRestart restarts one replica (SIGTERM, then a
// new process at once) with the same group instance id
// (AMPSTREAM_KAFKA_GROUP_INSTANCE_ID). Target: the new process owns its
// partitions again and delivers within 5 s of its start; "its partitions":
// the same ones, not handed to the other replica in between, and without a
// rebalance (the other replica's partitions are never revoked) — what
// static membership is for.
func TestClusterChaosStaticMemberRestart(t *testing.T) {
	r := newClusterRun(t, 54)
	a := r.startReplica("AMPSTREAM_KAFKA_GROUP_INSTANCE_ID=replica-a")
	b := r.startReplica("AMPSTREAM_KAFKA_GROUP_INSTANCE_ID=replica-b")
	r.steady("two replicas delivering", 3000)
	var before []int
	eventually(t, 60*time.Second, "the group to settle on two members", func() bool {
		before = ownedPartitions(a.admin)
		return len(before) > 0 && len(before)+len(ownedPartitions(b.admin)) == clusterPartitions
	})
	revokedB := revocations(b.admin)
	// Static membership keeps the partitions assigned to the instance while
	// it restarts; a new member id gets them moved to the other replica and
	// back. Watch the other replica for them until the restarted one owns
	// partitions.
	watch := watchOwnership(t, b.admin, before)
	a.term()
	a2 := r.startReplica("AMPSTREAM_KAFKA_GROUP_INSTANCE_ID=replica-a")
	started := time.Now()
	var assigned, delivered time.Duration
	var after []int
	eventually(t, 60*time.Second, "the restarted replica to own partitions and deliver", func() bool {
		if assigned == 0 {
			// Each partition's series appears as its goroutine starts, just
			// after the assignment's count is set: the first assignment is
			// read once all of it is up.
			n := scrapeMetrics(a2.admin, "ampstream_kafka_assigned_partitions")["ampstream_kafka_assigned_partitions"]
			if after = ownedPartitions(a2.admin); len(after) > 0 && float64(len(after)) == n {
				assigned = time.Since(started)
			}
		}
		if delivered == 0 && scrapeMetrics(a2.admin, "ampstream_events_forwarded_total")["ampstream_events_forwarded_total"] > 0 {
			delivered = time.Since(started)
		}
		return assigned > 0 && delivered > 0
	})
	movedToOther := watch()
	revokedB = revocations(b.admin) - revokedB
	r.allCommitting("every partition committing after the restart")
	rep, invalid, fs := r.finish(2000)
	same := slices.Equal(before, after)
	r.h.chaosLine("cluster_static_restart", rep, invalid, append(fs.fields(),
		"assigned_after_start_s="+secs(assigned), "first_delivery_after_start_s="+secs(delivered),
		fmt.Sprintf("same_partitions=%t partitions_before=%s partitions_after=%s moved_to_other_replica=%t other_replica_revocations=%.0f",
			same, ints(before), ints(after), movedToOther, revokedB))...)
	if delivered > 5*time.Second {
		missedTarget(t, "the restarted replica delivered %ss after its start, want ≤ 5s", secs(delivered))
	}
	if revokedB > 0 {
		missedTarget(t, "the other replica's partitions were revoked %.0f times during the restart, want 0 (no rebalance)", revokedB)
	}
	if movedToOther {
		missedTarget(t, "the restarted replica's partitions %s were handed to the other replica meanwhile, want them kept for its instance id", ints(before))
	}
	if !same {
		missedTarget(t, "the restarted replica first owned partitions %s, before the restart %s: want the same", ints(after), ints(before))
	}
}

// TestClusterChaosKillReplicaThenScaleUp SIGKILLs one of two replicas and
// starts a third at once. Target: the group change (the survivor and the
// new replica owning all partitions between them) completes within the
// session timeout, plus one heartbeat interval for the members to learn of
// it.
func TestClusterChaosKillReplicaThenScaleUp(t *testing.T) {
	r := newClusterRun(t, 55)
	a := r.startReplica()
	b := r.startReplica()
	r.steady("two replicas delivering", 3000)
	a.kill9()
	killed := time.Now()
	c := r.startReplica()
	var change time.Duration
	eventually(t, 90*time.Second, "the survivor and the new replica to own every partition", func() bool {
		pb, pc := ownedPartitions(b.admin), ownedPartitions(c.admin)
		if len(pc) > 0 && len(pb)+len(pc) == clusterPartitions {
			change = time.Since(killed)
			return true
		}
		return false
	})
	resumed := r.allCommitting("every partition committing after the group change")
	rep, invalid, fs := r.finish(2000)
	r.h.chaosLine("cluster_kill_replica_scale_up", rep, invalid, append(fs.fields(),
		"group_change_s="+secs(change), "all_committing_s="+secs(resumed.Sub(killed)),
		"session_timeout_s="+secs(clusterSession))...)
	if limit := clusterSession + time.Second; change > limit {
		missedTarget(t, "the group change took %ss after the kill, want ≤ %ss (session timeout + one heartbeat)", secs(change), secs(limit))
	}
}

// Fault windows of TestClusterChaosSlowThenPartitionedBroker.
const (
	proxyDelayBy    = 500 * time.Millisecond
	proxySlowWindow = 15 * time.Second
	proxyCutWindow  = 15 * time.Second
)

// TestClusterChaosSlowThenPartitionedBroker puts a TCP proxy in front of the
// client listener of one broker that leads partitions but does not
// coordinate the group (the node advertises the proxy's address, so every
// client connection to it goes through the proxy; replication does not).
// The proxy first delays every chunk by 500 ms each way for 15 s (a slow
// broker), then resets every connection and swallows all traffic for 15 s
// (a broker partitioned from its clients but not from the cluster, so its
// leaderships do not move), then heals. ampstream must lose nothing and
// deliver again once the broker is reachable.
func TestClusterChaosSlowThenPartitionedBroker(t *testing.T) {
	r := setupClusterRun(t, 56)
	coord := r.c.coordinatorOf(r.h.group)
	victim := mostLeader(r.c.leaders(r.h.topic), coord)
	px := startFaultProxy(t, r.c.brokers[victim-1], proxyDelayBy)
	// Runs before the cluster's own cleanup and after the replicas'
	// (t.Cleanup is last in, first out): the node must stop advertising the
	// proxy before the proxy goes away.
	t.Cleanup(func() { r.c.term(victim); r.c.startNode(victim) })
	r.c.term(victim)
	r.c.startNode(victim, "KAFKA_ADVERTISED_ADDR="+px.addr())
	r.c.waitISR()
	r.c.electLeaders(r.h.topic)
	led := 0
	for _, n := range r.c.leaders(r.h.topic) {
		if n == victim {
			led++
		}
	}
	if led == 0 {
		t.Fatalf("node %d leads no partition of %s after the preferred leader election", victim, r.h.topic)
	}
	// Clients bootstrap through the proxy too: no connection to the victim
	// bypasses it.
	r.h.kafka.Brokers = slices.Clone(r.c.brokers)
	r.h.kafka.Brokers[victim-1] = px.addr()
	t.Logf("group coordinator node %d; node %d (leading %d partitions) behind the proxy at %s", coord, victim, led, px.addr())

	r.startTraffic()
	r.startReplica()
	r.startReplica()
	r.steady("two replicas delivering", 3000)

	px.setMode(proxyDelay)
	slow := time.NewTimer(proxySlowWindow)
	<-slow.C
	atCut := r.h.emu.Stats().Ingested
	px.setMode(proxyBlackhole)
	px.cut()
	cut := time.NewTimer(proxyCutWindow)
	<-cut.C
	duringCut := r.h.emu.Stats().Ingested - atCut
	px.setMode(proxyPass)
	px.cut() // the swallowed connections are useless now: clients reconnect
	healed := time.Now()
	resumed := r.allCommitting("every partition committing after the heal")
	back := r.fl.writesBack(healed)
	rep, invalid, fs := r.finish(2000)
	r.h.chaosLine("cluster_slow_partitioned_broker", rep, invalid, append(fs.fields(),
		fmt.Sprintf("victim=%d coordinator=%d victim_partitions=%d", victim, coord, led),
		"delay_ms="+strconv.Itoa(int(proxyDelayBy.Milliseconds())), "slow_s="+secs(proxySlowWindow), "partitioned_s="+secs(proxyCutWindow),
		fmt.Sprintf("ingested_while_partitioned=%d", duringCut),
		"writes_back_s="+secs(back.Sub(healed)), "resume_s="+secs(fs.resumeAfter(back)),
		"all_committing_s="+secs(resumed.Sub(healed)),
		fmt.Sprintf("io_timeouts=%d fetch_failures=%d join_failures=%d",
			r.logCount("i/o timeout"), r.logCount("fetch failed"), r.logCount("consumer group join failed")))...)
}

// missedTarget reports a missed target (as opposed to a broken invariant):
// a test failure, or only a log line with CHAOS_CLUSTER_TARGETS=report, for
// measuring the figures of code that is known to miss them.
func missedTarget(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CHAOS_CLUSTER_TARGETS") == "report" {
		t.Logf("TARGET MISSED: "+format, args...)
		return
	}
	t.Errorf(format, args...)
}

// revocations is the replica's count of generations ended
// (ampstream_kafka_rebalances_total{event="revoked"}).
func revocations(admin string) float64 {
	return scrapeSeries(admin, "ampstream_kafka_rebalances_total")[`ampstream_kafka_rebalances_total{event="revoked"}`]
}

// watchOwnership polls the replica at admin every 50 ms from now on and
// reports, when the returned function is called (which stops the polling),
// whether it owned any of parts meanwhile. t.Cleanup stops it too.
func watchOwnership(t *testing.T, admin string, parts []int) func() bool {
	stop := make(chan struct{})
	result := make(chan bool, 1)
	go func() {
		took := false
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				result <- took
				return
			case <-tick.C:
			}
			for _, p := range ownedPartitions(admin) {
				took = took || slices.Contains(parts, p)
			}
		}
	}()
	var once sync.Once
	finish := func() bool {
		took := false
		once.Do(func() { close(stop); took = <-result })
		return took
	}
	t.Cleanup(func() { finish() })
	return finish
}

// mostLeader returns the node other than exclude that leads the most
// partitions.
func mostLeader(leaders map[int]int, exclude int) int {
	count := map[int]int{}
	for _, n := range leaders {
		count[n]++
	}
	best := 0
	for _, n := range otherThan(exclude) {
		if best == 0 || count[n] > count[best] {
			best = n
		}
	}
	return best
}

// ownedPartitions lists the partitions a replica owns now: its admin
// /metrics has a committed-offset series exactly for those (a revoked
// partition's series are deleted).
func ownedPartitions(admin string) []int {
	var out []int
	for k := range scrapeSeries(admin, "ampstream_kafka_partition_committed_offset") {
		_, rest, ok := strings.Cut(k, `partition="`)
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, `"`)
		if n, err := strconv.Atoi(v); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}

func ints(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return "[" + strings.Join(s, ",") + "]"
}

// --- measuring the flow -----------------------------------------------------

// flow records when Kafka acknowledged each event (the producer's
// completion callback) so that, with the emulator's arrival times, a
// scenario can measure per-partition pauses and produce→Amplitude latency.
type flow struct {
	mu    sync.Mutex
	acks  map[string]ackRec   // insert_id → its first acknowledgement
	ackAt map[int][]time.Time // partition → every batch with a first acknowledgement
	raw   map[string]struct{} // key and value of each acknowledged event without insert_id
}

type ackRec struct {
	part int
	at   time.Time
}

func newFlow() *flow {
	return &flow{acks: map[string]ackRec{}, ackAt: map[int][]time.Time{}, raw: map[string]struct{}{}}
}

// record notes the acknowledgement of msgs. A partition's write counts
// only when one of its messages is acknowledged for the first time: the
// producer rewrites a whole batch when some of its partitions fail, and a
// rewritten copy Kafka accepts again is no new event for ampstream to
// deliver (the emulator drops it as a duplicate), so counting it would
// shorten the producer's pause on the partitions that did not move.
func (f *flow) record(msgs []kafka.Message) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	last := -1
	for _, m := range msgs {
		if id := insertIDOf(m.Value); id != "" {
			if _, ok := f.acks[id]; ok {
				continue
			}
			f.acks[id] = ackRec{part: m.Partition, at: now}
		} else {
			// An invalid event (dead-lettered, never delivered) has no
			// insert_id: its bytes tell a rewrite from a first write.
			raw := string(m.Key) + "\x00" + string(m.Value)
			if _, ok := f.raw[raw]; ok {
				continue
			}
			f.raw[raw] = struct{}{}
		}
		if m.Partition != last {
			f.ackAt[m.Partition] = append(f.ackAt[m.Partition], now)
			last = m.Partition
		}
	}
}

// writesBack is when Kafka accepted writes on every partition again after
// t: the latest, over partitions, of the first acknowledgement after t (the
// producer writes to every partition every tick, so a partition without a
// leader shows as the last to be acknowledged).
func (f *flow) writesBack(t time.Time) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	back := t
	for _, acks := range f.ackAt {
		i, _ := slices.BinarySearchFunc(acks, t, func(a, b time.Time) int { return a.Compare(b) })
		if i < len(acks) && acks[i].After(back) {
			back = acks[i]
		}
	}
	return back
}

// insertIDOf cuts the insert_id out of a generator event without parsing
// the whole JSON ("" when there is none: invalid input).
func insertIDOf(v []byte) string {
	const key = `"insert_id":"`
	i := bytes.Index(v, []byte(key))
	if i < 0 {
		return ""
	}
	rest := v[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// flowStats are a scenario's delivery figures.
type flowStats struct {
	deliveries int
	unmatched  int // stored events with no acknowledgement on record
	// stall is the longest time one partition went without a delivery.
	stall     time.Duration
	stallPart int
	// producerPause is the longest time one partition went without an
	// acknowledged write.
	producerPause time.Duration
	// excess is the largest amount by which a partition's longest delivery
	// pause exceeded its longest write pause (excessGap on excessPart).
	excess, excessGap time.Duration
	excessPart        int
	// p99 and max of Kafka acknowledgement → stored by Amplitude.
	p99, max time.Duration
	arrivals map[int][]time.Time // partition → sorted arrival times
}

func (f *flow) analyse(e *emulator.Emulator) flowStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := flowStats{arrivals: map[int][]time.Time{}}
	var lat []time.Duration
	for _, d := range e.AllDevices() {
		for _, in := range e.Events(d) {
			a, ok := f.acks[in.InsertID]
			if !ok {
				s.unmatched++
				continue
			}
			s.deliveries++
			s.arrivals[a.part] = append(s.arrivals[a.part], in.Arrival)
			lat = append(lat, max(in.Arrival.Sub(a.at), 0))
		}
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		s.p99 = lat[len(lat)*99/100]
		s.max = lat[len(lat)-1]
	}
	for p, arr := range s.arrivals {
		slices.SortFunc(arr, func(a, b time.Time) int { return a.Compare(b) })
		dg := longestGap(arr)
		if dg > s.stall {
			s.stall, s.stallPart = dg, p
		}
		pg := longestGap(f.ackAt[p])
		s.producerPause = max(s.producerPause, pg)
		if ex := dg - pg; ex > s.excess {
			s.excess, s.excessGap, s.excessPart = ex, dg, p
		}
	}
	return s
}

func longestGap(ts []time.Time) time.Duration {
	var g time.Duration
	for i := 1; i < len(ts); i++ {
		g = max(g, ts[i].Sub(ts[i-1]))
	}
	return g
}

// resumeAfter is how long after t every partition had delivered again:
// the latest, over partitions, of the first delivery at or after t.
func (s flowStats) resumeAfter(t time.Time) time.Duration {
	var worst time.Duration
	for _, arr := range s.arrivals {
		i, _ := slices.BinarySearchFunc(arr, t, func(a, b time.Time) int { return a.Compare(b) })
		if i == len(arr) {
			return -1 // a partition never delivered after t
		}
		worst = max(worst, arr[i].Sub(t))
	}
	return worst
}

func (s flowStats) fields() []string {
	return []string{
		fmt.Sprintf("stall_s=%s stall_partition=%d producer_pause_s=%s pause_excess_s=%s",
			secs(s.stall), s.stallPart, secs(s.producerPause), secs(s.excess)),
		fmt.Sprintf("latency_p99_s=%s latency_max_s=%s deliveries_measured=%d unmatched=%d", secs(s.p99), secs(s.max), s.deliveries, s.unmatched),
	}
}
