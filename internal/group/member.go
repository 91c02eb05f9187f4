// Package group is a member of a Kafka consumer group (classic protocol)
// built on kafka-go's protocol API: JoinGroup, SyncGroup, Heartbeat,
// OffsetCommit, OffsetFetch and LeaveGroup, with static membership
// (KIP-345) and cooperative incremental rebalancing (KIP-429).
//
// It keeps its member id and generation across coordinator moves and
// broker restarts, retrying for longer than a KRaft broker failover takes,
// so a coordinator failure costs the group no rebalance; with a
// GroupInstanceID a restarted process takes its partitions back without a
// rebalance; a rebalance revokes only the partitions that move. It also
// offers the eager "range" protocol, second, so it can share a group with
// kafka-go ConsumerGroup members (an older release during a rolling
// update); in a range generation it revokes everything before it rejoins.
// DESIGN.md says why and what Kafka behaviour it relies on.
//
// Concurrency: Run owns two goroutines, its own (the membership loop) and
// the heartbeat goroutine, which it stops and waits for before returning.
// The callbacks (Config.Assigned, Revoked, Lost) run on Run's goroutine,
// one at a time, in the order the partitions change hands; heartbeats go on
// while they run, so a revocation may drain for longer than the session
// timeout. Commit, FetchOffsets and State are safe from any goroutine.
package group

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/consumer"
	"github.com/segmentio/kafka-go/protocol/heartbeat"
	"github.com/segmentio/kafka-go/protocol/joingroup"
	"github.com/segmentio/kafka-go/protocol/leavegroup"
	"github.com/segmentio/kafka-go/protocol/syncgroup"
)

// Config configures a Member.
type Config struct {
	Brokers []string
	// Transport carries TLS, SASL and the client id. The member closes its
	// idle connections when Run returns. Nil: a plaintext one of its own.
	Transport *kafka.Transport
	Group     string
	Topics    []string
	// InstanceID makes the member static (KIP-345): a process restarted
	// with the same one gets its partitions back without a rebalance, and
	// a stopping static member does not leave the group. Empty: dynamic.
	InstanceID        string
	SessionTimeout    time.Duration // default 10 s
	HeartbeatInterval time.Duration // default 1 s
	RebalanceTimeout  time.Duration // default 45 s
	// RetryTimeout bounds how long a commit or an offset fetch retries
	// through coordinator errors. Default 20 s, see DefaultRetryTimeout.
	RetryTimeout time.Duration
	Log          zerolog.Logger

	// Assigned is handed the partitions added to this member, each with
	// its committed offset (-1: none). Revoked is handed partitions that
	// move to another member (or all of them when Run stops): the owner
	// stops them, drains, commits (Commit still works) and returns; the
	// member rejoins only then. Lost is handed partitions the group
	// already gave away (session expired, generation fenced): stop them
	// without committing. All run on Run's goroutine; nil is allowed.
	Assigned func(added []Assignment)
	Revoked  func(revoked []TopicPartition)
	Lost     func(lost []TopicPartition)
}

// Assignment is a partition given to this member and where to start.
type Assignment struct {
	TopicPartition
	// Offset is the committed offset: the next one to read; -1 when the
	// group has committed none for it.
	Offset int64
}

// DefaultRetryTimeout is how long a coordinator call keeps retrying. A
// SIGKILLed broker is fenced by the KRaft controller after
// broker.session.timeout.ms (9 s by default); only then are its
// __consumer_offsets partitions led elsewhere, and the new coordinator
// loads the group (measured under a second to a few seconds on 2 cores).
// 9 s + load + the retry backoff (≤ 1 s) + one attempt in flight is about
// 12–15 s; 20 s leaves a margin and stays below shutdown.drain_timeout's
// budget. kafka-go's ConsumerGroup gave up after 5 s, before the failover
// was over.
const DefaultRetryTimeout = 20 * time.Second

// attemptTimeout bounds one request that the broker answers at once
// (everything but JoinGroup and SyncGroup, which wait for the group).
const attemptTimeout = 5 * time.Second

// metadataCheck is how often the member re-reads the topics' partition
// counts: the leader rejoins when one changed, so new partitions are
// assigned; every member updates State().Total.
const metadataCheck = 30 * time.Second

// ErrLost: the group gave this member's partitions away (its session
// expired or its generation was fenced); the next owner starts from the
// last commit.
var ErrLost = errors.New("partitions lost: no longer a member of the group's generation")

// ErrFenced: another process joined with the same GroupInstanceID.
var ErrFenced = errors.New("fenced: another process uses the same group instance id (kafka.group_instance_id must be unique per replica)")

// State is the member's view of its membership, for readiness and status.
type State struct {
	Member     bool
	Reason     string    // why not a member, or what a member waits for
	Since      time.Time // when Member or Reason last changed
	Generation int       // -1 when none
	// Protocol is the assignment protocol of the last generation joined:
	// Protocol (cooperative) or RangeProtocol (eager, while a member
	// without cooperative-sticky is in the group); "" before the first.
	Protocol   string
	MemberID   string
	InstanceID string
	Owned      int       // partitions owned now
	Total      int       // partitions of the subscribed topics, 0 until known
	LastOwned  time.Time // last time it owned partitions (now, while it does)
}

// Member is one member of a consumer group.
type Member struct {
	cfg  Config
	cl   *kafka.Client
	addr net.Addr // the bootstrap brokers
	log  zerolog.Logger

	// kick wakes the membership loop after a heartbeat or commit saw a
	// rebalance or a loss (the details are in sig*, under mu).
	kick chan struct{}

	mu           sync.Mutex
	memberID     string
	generation   int  // -1: none
	synced       bool // the generation's SyncGroup completed
	heartbeating bool // a join response gave a generation to heartbeat with
	leader       bool
	protocol     string        // the generation's assignment protocol
	changed      chan struct{} // closed and replaced when generation/synced change
	owned        map[TopicPartition]bool
	ownedGen     int // generation the owned partitions were last confirmed in
	total        int
	member       bool
	reason       string
	since        time.Time
	lastOwned    time.Time
	lastContact  time.Time
	coordinator  net.Addr // for heartbeats, which kafka-go does not route (see heartbeat)
	sigRejoin    int      // a rebalance was announced in this generation; -1 none
	sigLost      int      // this generation was lost; -1 none
	sigReset     bool     // the coordinator does not know the member id
	sigFatal     error
}

// New returns a Member; Run joins.
func New(cfg Config) *Member {
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.RebalanceTimeout <= 0 {
		cfg.RebalanceTimeout = 45 * time.Second
	}
	if cfg.RetryTimeout <= 0 {
		cfg.RetryTimeout = DefaultRetryTimeout
	}
	if cfg.Transport == nil {
		cfg.Transport = &kafka.Transport{}
	}
	addr := kafka.TCP(cfg.Brokers...)
	now := time.Now()
	return &Member{
		cfg:        cfg,
		cl:         &kafka.Client{Addr: addr, Transport: cfg.Transport},
		addr:       addr,
		log:        cfg.Log,
		kick:       make(chan struct{}, 1),
		generation: -1,
		ownedGen:   -1,
		changed:    make(chan struct{}),
		owned:      map[TopicPartition]bool{},
		reason:     "not started",
		since:      now,
		sigRejoin:  -1,
		sigLost:    -1,
	}
}

// State returns a snapshot of the membership.
func (m *Member) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := State{
		Member: m.member, Reason: m.reason, Since: m.since, Generation: m.generation, Protocol: m.protocol,
		MemberID: m.memberID, InstanceID: m.cfg.InstanceID, Owned: len(m.owned), Total: m.total,
		LastOwned: m.lastOwned,
	}
	if len(m.owned) > 0 {
		s.LastOwned = time.Now()
	}
	// Heartbeats unanswered for a whole session: whatever the coordinator
	// decided, this member cannot count on being in the group. (While a
	// JoinGroup is pending, heartbeats pause and the coordinator may hold
	// the join for the rebalance timeout: that is no silence.)
	if s.Member && m.heartbeating && !m.lastContact.IsZero() && time.Since(m.lastContact) > m.cfg.SessionTimeout {
		s.Member = false
		s.Reason = "no answer from the group coordinator"
		s.Since = m.lastContact
	}
	return s
}

// setReason records what the member waits for; Member turns false when
// it holds no synced generation.
func (m *Member) setReason(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reason != reason {
		m.reason, m.since = reason, time.Now()
	}
}

func (m *Member) contact() {
	m.mu.Lock()
	m.lastContact = time.Now()
	m.mu.Unlock()
}

// broadcastLocked wakes Commit calls waiting for the generation to settle.
func (m *Member) broadcastLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Run joins the group and stays a member until ctx is cancelled; then it
// revokes every partition (Revoked), and leaves the group unless the
// member is static. It returns nil then, or ErrFenced, or an error the
// group cannot recover from (authorization, invalid session timeout).
func (m *Member) Run(ctx context.Context) error {
	hctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.heartbeatLoop(hctx)
	}()
	defer func() {
		stop()
		wg.Wait()
		m.cfg.Transport.CloseIdleConnections()
	}()
	m.log.Info().Str("group", m.cfg.Group).Strs("topics", m.cfg.Topics).Str("instance_id", m.cfg.InstanceID).
		Strs("protocols", []string{Protocol, RangeProtocol}).Msg("joining consumer group")

	m.setReason("joining the group")
	err := m.loop(ctx)
	owned := m.ownedList()
	switch {
	case err != nil:
		m.lose(false, "stopped: "+err.Error())
	default:
		if m.cfg.InstanceID == "" {
			m.log.Info().Int("partitions", len(owned)).Msg("stopping: draining partitions, committing, leaving the group")
		} else {
			m.log.Info().Int("partitions", len(owned)).Msg("stopping: draining partitions and committing; a static member stays in the group")
		}
		if len(owned) > 0 {
			// Heartbeats go on while the owner drains and commits.
			m.revoke(owned)
		}
	}
	m.mu.Lock()
	id, gen := m.memberID, m.generation
	m.member, m.reason, m.since = false, "stopped", time.Now()
	m.mu.Unlock()
	if err == nil && id != "" {
		if m.cfg.InstanceID != "" {
			// A static member's partitions wait for it for a session
			// timeout: a restart (rolling update) costs no rebalance.
			m.log.Info().Int("generation", gen).Msg("static member stopped without leaving the group")
		} else {
			m.leave(id)
		}
	}
	return err
}

func (m *Member) leave(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	err := m.retry(ctx, func(ctx context.Context) error {
		// Sent through the transport: kafka.Client.LeaveGroup misreads the
		// top-level error (responseError).
		resp, err := roundTrip[*leavegroup.Response](ctx, m.cfg.Transport, m.addr, &leavegroup.Request{
			GroupID: m.cfg.Group, Members: []leavegroup.RequestMember{{MemberID: id}},
		})
		if err != nil {
			return err
		}
		if err := responseError(resp.ErrorCode, resp.ThrottleTimeMS); err != nil {
			return err
		}
		for _, mr := range resp.Members {
			if mr.ErrorCode != 0 {
				return kafka.Error(mr.ErrorCode)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, kafka.UnknownMemberId) {
		m.log.Warn().Err(err).Msg("leave group failed; the coordinator drops the member after its session timeout")
		return
	}
	m.log.Info().Str("member_id", id).Msg("left the consumer group")
}

// retry calls fn until it succeeds, fails with an error that is not
// transient, or ctx ends (then the last error is returned).
func (m *Member) retry(ctx context.Context, fn func(context.Context) error) error {
	for failures := 0; ; failures++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := fn(actx)
		cancel()
		if err == nil || !transient(err) {
			return err
		}
		if !sleep(ctx, backoff(failures)) {
			return err
		}
	}
}

// loop is the membership loop: join, sync, hand partitions over, wait for
// the next rebalance.
func (m *Member) loop(ctx context.Context) error {
	for ctx.Err() == nil {
		assigned, err := m.joinAndSync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		owned := m.ownedSet()
		var revoked []TopicPartition
		for tp := range owned {
			if !assigned[tp] {
				revoked = append(revoked, tp)
			}
		}
		if len(revoked) > 0 {
			m.revoke(revoked)
		}
		var added []TopicPartition
		for tp := range assigned {
			if !owned[tp] {
				added = append(added, tp)
			}
		}
		if len(added) > 0 {
			if err := m.assign(ctx, added); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		if len(revoked) > 0 {
			// KIP-429: what this member gave up is assigned in the next
			// generation, which starts when it rejoins. The same holds in
			// the range generation that follows a rollback (joinAndSync).
			continue
		}
		if err := m.wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (m *Member) ownedSet() map[TopicPartition]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.owned)
}

func (m *Member) ownedList() []TopicPartition {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.owned)
}

func sortedKeys(s map[TopicPartition]bool) []TopicPartition {
	out := slices.Collect(maps.Keys(s))
	slices.SortFunc(out, comparePartitions)
	return out
}

func (m *Member) revoke(tps []TopicPartition) {
	slices.SortFunc(tps, comparePartitions)
	m.log.Info().Int("partitions", len(tps)).Msg("partitions revoked: draining and committing")
	if m.cfg.Revoked != nil {
		m.cfg.Revoked(tps)
	}
	m.mu.Lock()
	for _, tp := range tps {
		delete(m.owned, tp)
	}
	if len(m.owned) == 0 {
		m.lastOwned = time.Now()
	}
	m.mu.Unlock()
}

// lose hands every owned partition to Lost and forgets the generation;
// resetID also forgets the member id (the coordinator does not know it).
// why becomes State's Reason.
func (m *Member) lose(resetID bool, why string) {
	lost := m.ownedList()
	if len(lost) > 0 {
		m.log.Warn().Int("partitions", len(lost)).Msg("partitions lost: stopping them without commit; the next owner starts from the last commit")
		if m.cfg.Lost != nil {
			m.cfg.Lost(lost)
		}
	}
	m.mu.Lock()
	clear(m.owned)
	if len(lost) > 0 {
		m.lastOwned = time.Now()
	}
	m.generation, m.ownedGen, m.synced, m.heartbeating, m.member = -1, -1, false, false, false
	m.reason, m.since = why, time.Now()
	if resetID {
		m.memberID = ""
	}
	m.broadcastLocked()
	m.mu.Unlock()
}

// assign fetches the committed offsets of the added partitions and hands
// them to Assigned.
func (m *Member) assign(ctx context.Context, added []TopicPartition) error {
	slices.SortFunc(added, comparePartitions)
	var offsets map[TopicPartition]int64
	for failures := 0; ; failures++ {
		var err error
		offsets, err = m.FetchOffsets(ctx, added)
		if err == nil {
			break
		}
		if ctx.Err() != nil || !transient(err) {
			return fmt.Errorf("fetch committed offsets: %w", err)
		}
		m.log.Warn().Err(err).Msg("fetching committed offsets failed; retrying")
		if !sleep(ctx, backoff(failures)) {
			return ctx.Err()
		}
	}
	out := make([]Assignment, len(added))
	m.mu.Lock()
	for i, tp := range added {
		out[i] = Assignment{TopicPartition: tp, Offset: offsets[tp]}
		m.owned[tp] = true
	}
	m.mu.Unlock()
	m.log.Info().Int("partitions", len(added)).Msg("partitions assigned")
	if m.cfg.Assigned != nil {
		m.cfg.Assigned(out)
	}
	return nil
}

// wait returns when the member must rejoin, or ctx ends.
func (m *Member) wait(ctx context.Context) error {
	t := time.NewTicker(metadataCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.kick:
		case <-t.C:
			if m.partitionsChanged(ctx) {
				m.log.Info().Msg("partition count changed: rejoining so the new partitions are assigned")
				return nil
			}
			continue
		}
		m.mu.Lock()
		gen, fatal := m.generation, m.sigFatal
		lost, reset, rejoin := m.sigLost == gen, m.sigReset, m.sigRejoin == gen
		m.sigLost, m.sigReset, m.sigRejoin = -1, false, -1
		m.mu.Unlock()
		switch {
		case fatal != nil:
			return fatal
		case lost:
			why := "the generation was fenced (ILLEGAL_GENERATION): rejoining"
			if reset {
				why = "the coordinator no longer knows this member (UNKNOWN_MEMBER_ID): rejoining"
			}
			m.lose(reset, why)
			return nil
		case rejoin:
			return nil
		}
	}
}

// partitionsChanged refreshes Total and reports whether the leader should
// rejoin because a subscribed topic's partition count changed.
func (m *Member) partitionsChanged(ctx context.Context) bool {
	counts, err := m.partitionCounts(ctx)
	if err != nil {
		return false
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := m.leader && m.total != total
	m.total = total
	return changed
}

func (m *Member) partitionCounts(ctx context.Context) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	resp, err := m.cl.Metadata(ctx, &kafka.MetadataRequest{Topics: m.cfg.Topics})
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, t := range resp.Topics {
		if t.Error != nil {
			continue // unknown topic: nothing to assign from it (yet)
		}
		counts[t.Name] = len(t.Partitions)
	}
	return counts, nil
}

// joinAndSync joins the group and gets this member's assignment, retrying
// until it has one, ctx ends, or the error is fatal. It keeps the member id
// and generation through coordinator errors; only UNKNOWN_MEMBER_ID resets
// the id.
func (m *Member) joinAndSync(ctx context.Context) (map[TopicPartition]bool, error) {
	w := &waitLog{m: m}
	defer w.done()
	for failures := 0; ; {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Eager (range) generation: give everything up before rejoining,
		// as every member of it does, so the leader may hand any partition
		// to anyone. Heartbeats go on while the owner drains and commits.
		m.revokeAllIfEager()
		m.mu.Lock()
		id, ownedGen := m.memberID, m.ownedGen
		owned := sortedKeys(m.owned)
		m.heartbeating = false // the JoinGroup in flight is the sign of life
		m.mu.Unlock()

		protocols, err := joinProtocols(m.cfg.Topics, ownedGen, owned)
		if err != nil {
			return nil, err
		}
		stopWarn := w.during("rebalance in progress: waiting for members to rejoin")
		resp, err := m.join(ctx, id, protocols)
		stopWarn()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, kafka.MemberIDRequired):
			// JoinGroup v4+: the coordinator names the member first.
			m.mu.Lock()
			m.memberID = resp.MemberID
			m.mu.Unlock()
			continue
		case errors.Is(err, kafka.UnknownMemberId):
			m.lose(true, "the coordinator no longer knows this member (UNKNOWN_MEMBER_ID): rejoining")
			continue
		case errors.Is(err, kafka.FencedInstanceID):
			return nil, fmt.Errorf("%w: %s", ErrFenced, m.cfg.InstanceID)
		case errors.Is(err, kafka.InconsistentGroupProtocol):
			w.failed("the group's members share no assignment protocol with this one (cooperative-sticky, range)", err)
			if !sleep(ctx, 5*time.Second) {
				return nil, ctx.Err()
			}
			continue
		case transient(err):
			w.failed("waiting for the group coordinator", err)
			if !sleep(ctx, backoff(failures)) {
				return nil, ctx.Err()
			}
			failures++
			continue
		default:
			return nil, fmt.Errorf("join group %s: %w", m.cfg.Group, err)
		}
		m.contact()

		gen := int(resp.GenerationID)
		m.mu.Lock()
		m.memberID, m.generation, m.synced, m.heartbeating = resp.MemberID, gen, false, true
		m.leader = resp.LeaderID == resp.MemberID
		leader := m.leader
		if m.protocol != resp.ProtocolName {
			m.log.Info().Str("protocol", resp.ProtocolName).Str("previous", m.protocol).Int("generation", gen).
				Msg("consumer group assignment protocol changed")
		}
		m.protocol = resp.ProtocolName
		m.broadcastLocked()
		m.mu.Unlock()
		// A cooperative member that a range generation finds owning
		// partitions (a member without cooperative-sticky joined) keeps
		// them until its SyncGroup: the group refuses commits
		// (REBALANCE_IN_PROGRESS) until the leader's SyncGroup, so a
		// revocation now could not commit, and a leader draining would
		// hold the whole group. After SyncGroup the loop revokes what it
		// was not assigned, commits in the new generation, and rejoins, as
		// a cooperative member does. This member's range leader withholds
		// every claimed partition from the others (withholdClaimed); a
		// kafka-go leader does not (DESIGN.md, Upgrading).

		var assignments []syncgroup.RequestAssignment
		if leader {
			assignments, err = m.assignAll(ctx, resp.ProtocolName, resp.Members)
			if err != nil {
				w.failed("waiting for the topics' metadata to assign partitions", err)
				if !sleep(ctx, backoff(failures)) {
					return nil, ctx.Err()
				}
				failures++
				continue
			}
		}
		stopWarn = w.during("waiting for the group leader's assignment")
		assigned, err := m.sync(ctx, gen, resp.MemberID, resp.ProtocolName, assignments)
		stopWarn()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, kafka.RebalanceInProgress):
			continue // another member joined meanwhile: rejoin at once
		case errors.Is(err, kafka.UnknownMemberId):
			m.lose(true, "the coordinator no longer knows this member (UNKNOWN_MEMBER_ID): rejoining")
			continue
		case errors.Is(err, kafka.IllegalGeneration):
			m.lose(false, "the generation was fenced (ILLEGAL_GENERATION): rejoining")
			continue
		case errors.Is(err, kafka.FencedInstanceID):
			return nil, fmt.Errorf("%w: %s", ErrFenced, m.cfg.InstanceID)
		case transient(err):
			w.failed("waiting for the group coordinator", err)
			if !sleep(ctx, backoff(failures)) {
				return nil, ctx.Err()
			}
			failures++
			continue
		default:
			return nil, fmt.Errorf("sync group %s: %w", m.cfg.Group, err)
		}
		m.contact()
		if counts, err := m.partitionCounts(ctx); err == nil {
			total := 0
			for _, n := range counts {
				total += n
			}
			m.mu.Lock()
			m.total = total
			m.mu.Unlock()
		}
		m.mu.Lock()
		m.synced, m.member, m.ownedGen = true, true, gen
		if m.reason != "" {
			m.reason, m.since = "", time.Now()
		}
		m.broadcastLocked()
		m.mu.Unlock()
		m.log.Info().Int("generation", gen).Str("member_id", resp.MemberID).Bool("leader", leader).
			Str("protocol", resp.ProtocolName).Int("partitions", len(assigned)).Msg("consumer group generation joined")
		return assigned, nil
	}
}

// revokeAllIfEager revokes every owned partition when the member's
// generation uses the range protocol.
func (m *Member) revokeAllIfEager() {
	m.mu.Lock()
	eager := m.protocol == RangeProtocol
	m.mu.Unlock()
	if !eager {
		return
	}
	owned := m.ownedList()
	if len(owned) == 0 {
		return
	}
	m.log.Info().Int("partitions", len(owned)).Msg("range (eager) protocol: revoking every partition before rejoining")
	m.revoke(owned)
}

// joinProtocols is the JoinGroup's protocol list, in order of preference.
// cooperative-sticky carries the ConsumerProtocol subscription version 1
// (topics, user data with the generation, owned partitions). range carries
// version 0 (topics, and the owned partitions inside the user data, see
// rangeUserData): kafka-go's ConsumerGroup, as leader, rejects metadata
// with bytes after the user data (consumergroup.go
// makeMemberProtocolMetadata).
func joinProtocols(topics []string, generation int, owned []TopicPartition) ([]joingroup.RequestProtocol, error) {
	sub := consumer.Subscription{Version: 1, Topics: topics, UserData: userData(generation), OwnedPartitions: byTopic(owned)}
	coop, err := protocol.Marshal(1, sub)
	if err != nil {
		return nil, fmt.Errorf("encode subscription: %w", err)
	}
	rng, err := protocol.Marshal(0, consumer.Subscription{Version: 0, Topics: topics, UserData: rangeUserData(generation, owned)})
	if err != nil {
		return nil, fmt.Errorf("encode subscription: %w", err)
	}
	return []joingroup.RequestProtocol{{Name: Protocol, Metadata: coop}, {Name: RangeProtocol, Metadata: rng}}, nil
}

// join sends one JoinGroup through the transport (which routes it to the
// coordinator). kafka.Client.JoinGroup encodes every protocol's metadata
// as version 1 and fails the whole response when one member's metadata is
// not a complete version 1 (kafka-go's ConsumerGroup sends version 1
// without owned partitions).
func (m *Member) join(ctx context.Context, id string, protocols []joingroup.RequestProtocol) (*joingroup.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RebalanceTimeout+attemptTimeout)
	defer cancel()
	resp, err := roundTrip[*joingroup.Response](ctx, m.cfg.Transport, m.addr, &joingroup.Request{
		GroupID:            m.cfg.Group,
		SessionTimeoutMS:   int32(m.cfg.SessionTimeout.Milliseconds()),
		RebalanceTimeoutMS: int32(m.cfg.RebalanceTimeout.Milliseconds()),
		MemberID:           id,
		GroupInstanceID:    m.cfg.InstanceID,
		ProtocolType:       "consumer",
		Protocols:          protocols,
	})
	if err != nil {
		return nil, err
	}
	if resp.ErrorCode != 0 {
		return resp, kafka.Error(resp.ErrorCode)
	}
	return resp, nil
}

// assignAll is the leader's part: the assignment of every member, by the
// generation's protocol.
func (m *Member) assignAll(ctx context.Context, proto string, members []joingroup.ResponseMember) ([]syncgroup.RequestAssignment, error) {
	if proto != Protocol && proto != RangeProtocol {
		return nil, fmt.Errorf("the coordinator chose protocol %q, which this member did not offer", proto)
	}
	topics := map[string]bool{}
	subs := make([]Subscription, 0, len(members))
	for _, mb := range members {
		s, err := decodeSubscription(mb.MemberID, mb.Metadata)
		if err != nil {
			return nil, fmt.Errorf("member %s: %w", mb.MemberID, err)
		}
		for _, t := range s.Topics {
			topics[t] = true
		}
		subs = append(subs, s)
	}
	mctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	resp, err := m.cl.Metadata(mctx, &kafka.MetadataRequest{Topics: slices.Sorted(maps.Keys(topics))})
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, t := range resp.Topics {
		switch {
		case t.Error == nil:
			counts[t.Name] = len(t.Partitions)
		case !errors.Is(t.Error, kafka.UnknownTopicOrPartition):
			// Assigning without the topic would revoke all of its
			// partitions from their owners: retry instead.
			return nil, fmt.Errorf("metadata of topic %s: %w", t.Name, t.Error)
		}
	}
	var plan map[string][]TopicPartition
	if proto == RangeProtocol {
		plan = withholdClaimed(AssignRange(subs, counts), subs)
	} else {
		plan = Assign(subs, counts)
	}
	out := make([]syncgroup.RequestAssignment, 0, len(plan))
	for _, id := range slices.Sorted(maps.Keys(plan)) {
		a := consumer.Assignment{Version: consumer.MaxVersionSupported}
		byTopic := map[string][]int32{}
		for _, tp := range plan[id] {
			byTopic[tp.Topic] = append(byTopic[tp.Topic], int32(tp.Partition))
		}
		for _, t := range slices.Sorted(maps.Keys(byTopic)) {
			a.AssignedPartitions = append(a.AssignedPartitions, consumer.TopicPartition{Topic: t, Partitions: byTopic[t]})
		}
		b, err := protocol.Marshal(consumer.MaxVersionSupported, a)
		if err != nil {
			return nil, fmt.Errorf("encode assignment: %w", err)
		}
		out = append(out, syncgroup.RequestAssignment{MemberID: id, Assignment: b})
	}
	return out, nil
}

// sync sends SyncGroup through the transport: kafka.Client.SyncGroup
// decodes the (empty) assignment of an error response before looking at
// the error code, and so turns REBALANCE_IN_PROGRESS or UNKNOWN_MEMBER_ID
// into "unexpected EOF" (kafka-go v0.4.51).
func (m *Member) sync(ctx context.Context, gen int, id, proto string, assignments []syncgroup.RequestAssignment) (map[TopicPartition]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RebalanceTimeout+attemptTimeout)
	defer cancel()
	resp, err := roundTrip[*syncgroup.Response](ctx, m.cfg.Transport, m.addr, &syncgroup.Request{
		GroupID: m.cfg.Group, GenerationID: int32(gen), MemberID: id, GroupInstanceID: m.cfg.InstanceID,
		ProtocolType: "consumer", ProtocolName: proto, Assignments: assignments,
	})
	if err != nil {
		return nil, err
	}
	if resp.ErrorCode != 0 {
		return nil, kafka.Error(resp.ErrorCode)
	}
	out := map[TopicPartition]bool{}
	if len(resp.Assignments) == 0 {
		return out, nil // the leader gave this member nothing
	}
	var a consumer.Assignment
	if err := protocol.Unmarshal(resp.Assignments, consumer.MaxVersionSupported, &a); err != nil {
		return nil, fmt.Errorf("decode assignment: %w", err)
	}
	for _, tp := range a.AssignedPartitions {
		for _, p := range tp.Partitions {
			out[TopicPartition{tp.Topic, int(p)}] = true
		}
	}
	return out, nil
}

// heartbeatLoop beats for the current generation while there is one,
// independently of the membership loop (a revocation may drain for longer
// than the session timeout). It never gives up: after a coordinator
// failure it retries quickly (100 ms doubling to 1 s) against the new
// coordinator, keeping the member id and generation.
func (m *Member) heartbeatLoop(ctx context.Context) {
	w := &waitLog{m: m, quiet: true}
	t := time.NewTimer(m.cfg.HeartbeatInterval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := m.cfg.HeartbeatInterval
		m.mu.Lock()
		gen, id, on := m.generation, m.memberID, m.heartbeating
		m.mu.Unlock()
		if on && gen >= 0 {
			err := m.heartbeat(ctx, gen, id)
			m.log.Debug().Err(err).Int("generation", gen).Msg("heartbeat")
			switch {
			case err == nil:
				failures = 0
				w.done()
				m.contact()
			case ctx.Err() != nil:
				return
			case errors.Is(err, kafka.RebalanceInProgress):
				failures = 0
				w.done()
				m.contact()
				m.signal(func() { m.sigRejoin = gen })
			case errors.Is(err, kafka.UnknownMemberId):
				m.signal(func() { m.sigLost, m.sigReset = gen, true })
			case errors.Is(err, kafka.IllegalGeneration):
				m.signal(func() { m.sigLost = gen })
			case errors.Is(err, kafka.FencedInstanceID):
				m.signal(func() { m.sigFatal = fmt.Errorf("%w: %s", ErrFenced, m.cfg.InstanceID) })
			default:
				w.failed("heartbeat failed: waiting for the group coordinator", err)
				next = backoff(failures)
				failures++
			}
		}
		t.Reset(next)
	}
}

func (m *Member) signal(set func()) {
	m.mu.Lock()
	set()
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// heartbeat sends one Heartbeat to the coordinator. kafka-go's Heartbeat
// request does not implement protocol.GroupMessage, so its Transport sends
// it to any broker instead of the coordinator (transport.go sendRequest
// looks up the coordinator only for GroupMessage requests): the member
// finds the coordinator itself and addresses it directly. And
// kafka.Client.Heartbeat decodes the response with its fields swapped
// (see responseError), so the member sends the request itself.
func (m *Member) heartbeat(ctx context.Context, gen int, id string) error {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	m.mu.Lock()
	coord := m.coordinator
	m.mu.Unlock()
	if coord == nil {
		resp, err := m.cl.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: m.cfg.Group, KeyType: kafka.CoordinatorKeyTypeConsumer})
		if err == nil {
			err = resp.Error
		}
		if err != nil {
			return err
		}
		coord = kafka.TCP(net.JoinHostPort(resp.Coordinator.Host, strconv.Itoa(resp.Coordinator.Port)))
		m.mu.Lock()
		m.coordinator = coord
		m.mu.Unlock()
	}
	resp, err := roundTrip[*heartbeat.Response](ctx, m.cfg.Transport, coord, &heartbeat.Request{
		GroupID: m.cfg.Group, GenerationID: int32(gen), MemberID: id, GroupInstanceID: m.cfg.InstanceID,
	})
	if err == nil {
		err = responseError(resp.ErrorCode, resp.ThrottleTimeMs)
	}
	if err != nil && coordinatorMoved(err) {
		m.mu.Lock()
		m.coordinator = nil
		m.mu.Unlock()
	}
	return err
}

// roundTrip sends req to addr through the transport and returns the
// response as R. The group requests go this way rather than through
// kafka.Client, which mishandles them in kafka-go v0.4.51 (see join, sync,
// leave and responseError).
func roundTrip[R protocol.Message](ctx context.Context, t *kafka.Transport, addr net.Addr, req protocol.Message) (R, error) {
	var zero R
	r, err := t.RoundTrip(ctx, addr, req)
	if err != nil {
		return zero, err
	}
	resp, ok := r.(R)
	if !ok {
		return zero, fmt.Errorf("%T: unexpected response %T", req, r)
	}
	return resp, nil
}

// responseError is the error of a Heartbeat or LeaveGroup response as
// kafka-go v0.4.51 decodes it. Its protocol/heartbeat and
// protocol/leavegroup Response structs declare ErrorCode before
// ThrottleTimeMs, but from v1 on the broker sends throttle_time_ms (int32)
// first, then error_code (int16): the 6 bytes are read as the throttle's
// high half (ErrorCode) and its low half followed by the error code
// (ThrottleTimeMs). The error code is therefore ThrottleTimeMs' low 16
// bits; a v0 response (no throttle: ThrottleTimeMs is 0) has it in
// ErrorCode. (A v1+ response with no error whose throttle is an exact
// multiple of 65.536 s would read as an error; brokers do not throttle
// group calls that long.)
// TestResponseErrorDecodesKafkaGoHeartbeat pins this against the bytes a
// broker sends.
func responseError(errorCode int16, throttle int32) error {
	if throttle != 0 {
		errorCode = int16(uint16(uint32(throttle)))
	}
	if errorCode == 0 {
		return nil
	}
	return kafka.Error(errorCode)
}

// Commit commits offsets (the next offset to read, per partition) with the
// member's current generation and ids. Through coordinator moves it retries
// on the new coordinator, and through a rebalance it waits for the
// generation to settle, for up to Config.RetryTimeout (or ctx's deadline).
// It fails for good with ErrLost when the group has moved on without this
// member: the partitions' next owner starts from their previous commit.
func (m *Member) Commit(ctx context.Context, offsets map[TopicPartition]int64) error {
	if len(offsets) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RetryTimeout)
	defer cancel()
	topics := map[string][]kafka.OffsetCommit{}
	for _, tp := range slices.SortedFunc(maps.Keys(offsets), comparePartitions) {
		topics[tp.Topic] = append(topics[tp.Topic], kafka.OffsetCommit{Partition: tp.Partition, Offset: offsets[tp]})
	}
	start := time.Now()
	var last error
	for failures := 0; ; {
		m.mu.Lock()
		gen, id, changed := m.generation, m.memberID, m.changed
		m.mu.Unlock()
		if gen < 0 {
			return fmt.Errorf("offset commit: %w", ErrLost)
		}
		actx, acancel := context.WithTimeout(ctx, attemptTimeout)
		resp, err := m.cl.OffsetCommit(actx, &kafka.OffsetCommitRequest{
			GroupID: m.cfg.Group, GenerationID: gen, MemberID: id, InstanceID: m.cfg.InstanceID, Topics: topics,
		})
		acancel()
		if err == nil {
		resp:
			for _, ps := range resp.Topics {
				for _, p := range ps {
					if p.Error != nil {
						err = p.Error
						break resp
					}
				}
			}
		}
		if err == nil {
			m.contact()
			return nil
		}
		last = err
		switch {
		case errors.Is(err, kafka.IllegalGeneration), errors.Is(err, kafka.UnknownMemberId):
			m.mu.Lock()
			moved := m.generation != gen || m.memberID != id
			m.mu.Unlock()
			if moved {
				continue // a rebalance gave a new generation meanwhile
			}
			reset := errors.Is(err, kafka.UnknownMemberId)
			m.signal(func() { m.sigLost, m.sigReset = gen, reset })
			return fmt.Errorf("offset commit: %w (%w)", ErrLost, err)
		case errors.Is(err, kafka.FencedInstanceID):
			m.signal(func() { m.sigFatal = fmt.Errorf("%w: %s", ErrFenced, m.cfg.InstanceID) })
			return fmt.Errorf("offset commit: %w", ErrFenced)
		case errors.Is(err, kafka.RebalanceInProgress), transient(err):
		default:
			return fmt.Errorf("offset commit: %w", err)
		}
		// Retry when the generation changes (a rebalance settled) or after
		// the backoff, whichever is first.
		t := time.NewTimer(backoff(failures))
		failures++
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			return fmt.Errorf("offset commit: gave up after %s: %w", time.Since(start).Round(time.Millisecond), last)
		}
	}
}

// FetchOffsets returns the committed offset (the next to read) of each
// partition, -1 where none was committed. It retries through coordinator
// errors for up to Config.RetryTimeout.
func (m *Member) FetchOffsets(ctx context.Context, tps []TopicPartition) (map[TopicPartition]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RetryTimeout)
	defer cancel()
	req := &kafka.OffsetFetchRequest{GroupID: m.cfg.Group, Topics: map[string][]int{}}
	for _, tp := range tps {
		req.Topics[tp.Topic] = append(req.Topics[tp.Topic], tp.Partition)
	}
	out := make(map[TopicPartition]int64, len(tps))
	err := m.retry(ctx, func(ctx context.Context) error {
		resp, err := m.cl.OffsetFetch(ctx, req)
		if err == nil {
			err = resp.Error
		}
		if errors.Is(err, kafka.GroupIdNotFound) {
			// kfake's answer for a group that never committed.
			for _, tp := range tps {
				out[tp] = -1
			}
			return nil
		}
		if err != nil {
			return err
		}
		for _, tp := range tps {
			out[tp] = -1
		}
		for topic, ps := range resp.Topics {
			for _, p := range ps {
				if p.Error != nil {
					return p.Error
				}
				out[TopicPartition{topic, p.Partition}] = max(p.CommittedOffset, -1)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("offset fetch: %w", err)
	}
	return out, nil
}

// coordinatorMoved: the coordinator is elsewhere now, or unreachable.
func coordinatorMoved(err error) bool {
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return true // connection errors, timeouts
	}
	switch ke {
	case kafka.NotCoordinatorForGroup, kafka.GroupCoordinatorNotAvailable, kafka.BrokerNotAvailable:
		return true
	}
	return false
}

// transient errors are retried: the coordinator moved, is loading, or the
// connection failed. Group-state errors (UNKNOWN_MEMBER_ID,
// ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID) are
// decided by the caller, not retried blindly.
func transient(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return true
	}
	switch ke {
	case kafka.NotCoordinatorForGroup, kafka.GroupCoordinatorNotAvailable, kafka.GroupLoadInProgress,
		kafka.RequestTimedOut, kafka.BrokerNotAvailable, kafka.NetworkException, kafka.NotEnoughReplicas,
		kafka.NotEnoughReplicasAfterAppend, kafka.LeaderNotAvailable, kafka.NotLeaderForPartition:
		return true
	case kafka.UnknownMemberId, kafka.IllegalGeneration, kafka.RebalanceInProgress, kafka.FencedInstanceID,
		kafka.MemberIDRequired, kafka.InconsistentGroupProtocol:
		return false
	}
	return ke.Temporary()
}

// backoff is 100 ms doubling to 1 s: a coordinator move is over at once,
// a broker failover takes seconds, and a member should notice either fast.
func backoff(failures int) time.Duration {
	return min(100*time.Millisecond<<min(failures, 4), time.Second)
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// waitLog makes a member that keeps waiting loud but not noisy: a warning
// when a wait has lasted warnAfter, then every warnEvery, saying what it
// waits for and since when; and one line when the wait is over.
type waitLog struct {
	m       *Member
	quiet   bool // heartbeats: do not touch State's reason
	mu      sync.Mutex
	reason  string
	since   time.Time
	logged  time.Time
	retries int
}

const (
	warnAfter = 2 * time.Second
	warnEvery = 10 * time.Second
)

func (w *waitLog) failed(reason string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if reason != w.reason {
		if w.since.IsZero() {
			w.since = now
		}
		w.reason = reason
	}
	w.retries++
	if !w.quiet {
		w.m.setReason(reason)
	}
	if now.Sub(w.since) >= warnAfter && now.Sub(w.logged) >= warnEvery {
		w.logged = now
		w.m.log.Warn().Err(err).Str("waiting_for", reason).Time("since", w.since).Int("retries", w.retries).
			Dur("waited", now.Sub(w.since).Round(time.Millisecond)).Msg("consumer group: still waiting")
	}
}

// during reports reason while a call that may block for long (a JoinGroup
// the coordinator holds until every member rejoined) is in flight.
func (w *waitLog) during(reason string) (stop func()) {
	start := time.Now()
	if !w.quiet {
		w.m.mu.Lock()
		if !w.m.member {
			w.m.mu.Unlock()
			w.m.setReason(reason)
		} else {
			w.m.mu.Unlock()
		}
	}
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(warnEvery/2, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		w.m.log.Warn().Str("waiting_for", reason).Time("since", start).
			Dur("waited", time.Since(start).Round(time.Millisecond)).Msg("consumer group: still waiting")
		t.Reset(warnEvery)
	})
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

func (w *waitLog) done() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.logged.IsZero() {
		w.m.log.Info().Str("waited_for", w.reason).Dur("waited", time.Since(w.since).Round(time.Millisecond)).
			Msg("consumer group: wait over")
	}
	w.reason, w.since, w.logged, w.retries = "", time.Time{}, time.Time{}, 0
}
