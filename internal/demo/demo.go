// Package demo runs ampstream end to end on one machine with nothing
// installed: an in-process Kafka broker (kfake), the Amplitude emulator with
// its real limits, a synthetic traffic mix, and the real pipeline over real
// sockets. It prints live progress and a summary, and fails unless every
// valid event was accepted exactly once, in per-device order, every invalid
// one was dead-lettered, and every offset was committed.
//
// Concurrency: Run owns every goroutine it starts and waits for them.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ampstream/ampstream/internal/app"
	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/metrics"
	"github.com/ampstream/ampstream/internal/sandbox"
	"github.com/ampstream/ampstream/internal/traffic"
)

// Options configure a demo run.
type Options struct {
	Duration   time.Duration // how long traffic is produced
	Rate       int           // normal events per second
	Devices    int           // normal devices
	Bursters   int           // devices that burst
	BurstSize  int           // events per burst
	Backfill   int           // backfill events (two days old)
	Partitions int
	Out        io.Writer // progress and summary
	Log        zerolog.Logger
	Build      app.Build
}

// Defaults fills unset options.
func (o *Options) Defaults() {
	if o.Duration <= 0 {
		o.Duration = 20 * time.Second
	}
	if o.Rate <= 0 {
		o.Rate = 2000
	}
	if o.Devices <= 0 {
		o.Devices = 5000
	}
	if o.Bursters <= 0 {
		o.Bursters = 5
	}
	if o.BurstSize <= 0 {
		o.BurstSize = 2000
	}
	if o.Backfill <= 0 {
		o.Backfill = 5000
	}
	if o.Partitions <= 0 {
		o.Partitions = 12
	}
}

const (
	topic    = "events"
	dlqTopic = "ampstream-dlq"
	group    = "ampstream-demo"
)

// Summary is what a run achieved.
type Summary struct {
	Produced, Valid, Invalid int
	Report                   traffic.Report
	DeadLettered             int
	Committed, End           int64
	HTTP429                  int64
	Elapsed                  time.Duration
	BurstViaBatch            float64
}

// Run executes the demo; it returns an error when a guarantee did not hold.
func Run(ctx context.Context, o Options) (Summary, error) {
	o.Defaults()
	start := time.Now()

	broker, err := sandbox.StartKafka(nil, kfake.SeedTopics(int32(o.Partitions), topic), kfake.SeedTopics(1, dlqTopic))
	if err != nil {
		return Summary{}, err
	}
	defer broker.Close()
	emu, err := sandbox.StartEmulator(emulator.DefaultConfig(), o.Log)
	if err != nil {
		return Summary{}, err
	}
	defer func() { _ = emu.Close() }()
	cfg := sandbox.Config(broker.Brokers, topic, group, dlqTopic, emu.URL())
	cfg.Amplitude.ThrottlePause = 5 * time.Second
	a, err := sandbox.StartApp(cfg, o.Log, o.Build)
	if err != nil {
		return Summary{}, err
	}
	defer func() { _ = a.Stop(stopTimeout) }()
	printHeader(ctx, o, broker.Brokers, emu.URL(), a)

	// Traffic, with a progress line every second while it flows.
	var sum Summary
	gen := traffic.New(uint64(time.Now().UnixNano()), o.Devices, 0.3, nil)
	prog := startProgress(o.Out, a, emu)
	err = produce(ctx, broker.Brokers, gen, o, &prog.produced, &sum)
	expected := gen.Expected() // device → valid events sent
	if err == nil {
		waitDelivered(ctx, broker.Brokers, a, emu, expected)
	}
	prog.stop()
	if err != nil {
		return sum, fmt.Errorf("produce: %w", err)
	}

	// The SIGTERM path: drain, commit, leave the group.
	if err := a.Stop(stopTimeout); err != nil {
		return sum, fmt.Errorf("ampstream: %w", err)
	}
	_ = emu.Close()

	sum.Elapsed = time.Since(start)
	sum.collect(broker.Brokers, a, emu, expected, o.Bursters)
	printSummary(o.Out, sum, emu.Stats())
	return sum, sum.check()
}

// stopTimeout bounds the drain on shutdown (10 s, sandbox.Config) with
// room to commit and leave the group.
const stopTimeout = 30 * time.Second

// deliverTimeout bounds the wait for the last events after traffic ends.
const deliverTimeout = 90 * time.Second

func printHeader(ctx context.Context, o Options, brokers []string, emuURL string, a *sandbox.App) {
	addrCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	adminAddr, _ := a.AdminAddr(addrCtx)
	cancel()
	fmt.Fprintf(o.Out, "ampstream demo: in-process Kafka %v (%d partitions), Amplitude emulator %s, status page http://%s/\n",
		brokers, o.Partitions, emuURL, adminAddr)
	fmt.Fprintf(o.Out, "traffic: %d events/s over %d devices for %s, %d bursting devices × %d events, %d backfill events, invalid input mixed in\n\n",
		o.Rate, o.Devices, o.Duration, o.Bursters, o.BurstSize, o.Backfill)
}

// waitDelivered polls until every valid event is stored and every offset
// committed, or deliverTimeout passes, or ctx ends: the summary then says
// what is missing.
func waitDelivered(ctx context.Context, brokers []string, a *sandbox.App, emu *sandbox.Emulator, expected map[string]int) {
	end := endOffsets(brokers)
	deadline := time.Now().Add(deliverTimeout)
	for {
		rep := traffic.Check(emu.Emulator, expected)
		if (rep.Delivered >= rep.Expected && committedTotal(a) >= end) || time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// collect fills in what the run achieved, after ampstream stopped.
func (s *Summary) collect(brokers []string, a *sandbox.App, emu *sandbox.Emulator, expected map[string]int, bursters int) {
	s.Report = traffic.Check(emu.Emulator, expected)
	s.DeadLettered = int(dlqTotal(metrics.Snapshot(a.Reg)))
	s.HTTP429 = emu.Stats().ByStatus[429]
	s.End = endOffsets(brokers)
	s.Committed = committedFromKafka(brokers)
	burstBatch, burstAll := 0, 0
	for i := range bursters {
		for _, in := range emu.Events(traffic.BurstDeviceID(i)) {
			burstAll++
			if in.Route == "batch" {
				burstBatch++
			}
		}
	}
	if burstAll > 0 {
		s.BurstViaBatch = float64(burstBatch) / float64(burstAll)
	}
}

// check returns what the demo promises and did not hold, or nil.
func (s *Summary) check() error {
	var errs []error
	if !s.Report.OK() {
		errs = append(errs, fmt.Errorf("delivery check failed: %s", s.Report))
	}
	if s.DeadLettered != s.Invalid {
		errs = append(errs, fmt.Errorf("dead-lettered %d events, want %d", s.DeadLettered, s.Invalid))
	}
	if s.Committed != s.End {
		errs = append(errs, fmt.Errorf("committed offsets sum to %d, end offsets to %d", s.Committed, s.End))
	}
	return errors.Join(errs...)
}

// dlqTotal sums ampstream_dlq_events_total over its reasons.
func dlqTotal(snap map[string]float64) float64 {
	var n float64
	for k, v := range snap {
		if strings.HasPrefix(k, "ampstream_dlq_events_total{") {
			n += v
		}
	}
	return n
}

// produce writes the traffic mix at the configured rate for the duration.
func produce(ctx context.Context, brokers []string, gen *traffic.Generator, o Options, produced *atomic.Int64, sum *Summary) error {
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond,
		BatchSize:    1000,
	}
	defer func() { _ = w.Close() }()
	const tick = 20 * time.Millisecond
	ticks := int(o.Duration / tick)
	perTick := max(o.Rate*int(tick/time.Millisecond)/1000, 1)
	burstFrom, burstTo := ticks*3/10, ticks*4/10 // bursts during 30–40% of the run
	backfillAt := ticks * 6 / 10
	burstPerTick := 0
	if burstTo > burstFrom {
		burstPerTick = (o.BurstSize + (burstTo - burstFrom) - 1) / (burstTo - burstFrom)
	}
	burstLeft := make([]int, o.Bursters)
	for i := range burstLeft {
		burstLeft[i] = o.BurstSize
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	batch := make([]kafka.Message, 0, perTick*2)
	for n := 0; n < ticks; n++ {
		batch = batch[:0]
		add := func(m traffic.Msg) {
			km := kafka.Message{Key: m.Key, Value: m.Value}
			for k, v := range m.Headers {
				km.Headers = append(km.Headers, kafka.Header{Key: k, Value: []byte(v)})
			}
			batch = append(batch, km)
			sum.Produced++
			if m.Valid {
				sum.Valid++
			} else {
				sum.Invalid++
			}
		}
		for i := 0; i < perTick; i++ {
			switch r := (n*perTick + i) % 200; {
			case r == 7:
				add(gen.Invalid())
			case r == 11:
				add(gen.UserOnly())
			case r == 13:
				add(gen.Forced("batch"))
			default:
				add(gen.Normal())
			}
		}
		if n >= burstFrom && n < burstTo {
			for b := range burstLeft {
				for k := 0; k < burstPerTick && burstLeft[b] > 0; k++ {
					add(gen.Burst(b))
					burstLeft[b]--
				}
			}
		}
		if n == backfillAt {
			for i := 0; i < o.Backfill; i++ {
				add(gen.Backfill())
			}
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			return err
		}
		produced.Add(int64(len(batch)))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// progress prints a line a second from its own goroutine until stop.
type progress struct {
	produced atomic.Int64 // events written to Kafka so far
	quit     chan struct{}
	done     chan struct{}
}

func startProgress(out io.Writer, a *sandbox.App, emu *sandbox.Emulator) *progress {
	p := &progress{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-p.quit:
				return
			case <-t.C:
			}
			p.print(out, time.Since(start), a, emu)
		}
	}()
	return p
}

func (p *progress) stop() {
	close(p.quit)
	<-p.done
}

func (p *progress) print(out io.Writer, since time.Duration, a *sandbox.App, emu *sandbox.Emulator) {
	s := metrics.Snapshot(a.Reg)
	var lag int64
	for _, st := range a.Consumer.Status() {
		lag += st.Lag
	}
	fmt.Fprintf(out, "[%3ds] produced %7d | realtime %7.0f | batch %7.0f | dead-lettered %4.0f | lag %6d | in flight %6.0f | hot keys %3.0f | 429s %d\n",
		int(since.Seconds()), p.produced.Load(),
		s["ampstream_events_forwarded_total{lane=realtime,outcome=accepted}"],
		s["ampstream_events_forwarded_total{lane=batch,outcome=accepted}"],
		dlqTotal(s), lag, s["ampstream_inflight_events"], s["ampstream_hot_keys"], emu.Stats().ByStatus[429])
}

func committedTotal(a *sandbox.App) int64 {
	var n int64
	for _, p := range a.Consumer.Status() {
		n += p.Committed
	}
	return n
}

func endOffsets(brokers []string) int64 {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	var offs []kafka.OffsetRequest
	meta, err := c.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(meta.Topics) == 0 {
		return -1
	}
	for _, p := range meta.Topics[0].Partitions {
		offs = append(offs, kafka.LastOffsetOf(p.ID))
	}
	req.Topics[topic] = offs
	resp, err := c.ListOffsets(context.Background(), req)
	if err != nil {
		return -1
	}
	var n int64
	for _, p := range resp.Topics[topic] {
		n += p.LastOffset
	}
	return n
}

func committedFromKafka(brokers []string) int64 {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	resp, err := c.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: partitionsList(brokers)}})
	if err != nil {
		return -1
	}
	var n int64
	for _, p := range resp.Topics[topic] {
		if p.CommittedOffset > 0 {
			n += p.CommittedOffset
		}
	}
	return n
}

func partitionsList(brokers []string) []int {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	meta, err := c.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(meta.Topics) == 0 {
		return nil
	}
	var ids []int
	for _, p := range meta.Topics[0].Partitions {
		ids = append(ids, p.ID)
	}
	return ids
}

func printSummary(out io.Writer, s Summary, st emulator.Stats) {
	ok := func(b bool) string {
		if b {
			return "ok"
		}
		return "FAILED"
	}
	fmt.Fprintf(out, "\n── summary ─────────────────────────────────────────────\n")
	fmt.Fprintf(out, "produced            %d messages (%d valid, %d invalid) in %s\n", s.Produced, s.Valid, s.Invalid, s.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(out, "accepted by Amplitude %d distinct events (HTTP V2 %d, Batch %d); duplicates deduplicated by insert_id: %d\n",
		s.Report.Delivered, s.Report.ByRoute["httpapi"], s.Report.ByRoute["batch"], st.Duplicates)
	fmt.Fprintf(out, "exactly once          %s (missing %d, unexpected %d)\n", ok(s.Report.Missing == 0 && s.Report.Unexpected == 0 && s.Report.Delivered == s.Report.Expected), s.Report.Missing, s.Report.Unexpected)
	fmt.Fprintf(out, "per-device order      %s (%d inversions over %d devices)\n", ok(s.Report.Inversions == 0), s.Report.Inversions, s.Report.Devices)
	fmt.Fprintf(out, "dead-lettered         %s (%d of %d invalid, each with a reason header)\n", ok(s.DeadLettered == s.Invalid), s.DeadLettered, s.Invalid)
	fmt.Fprintf(out, "offsets committed     %s (%d of %d)\n", ok(s.Committed == s.End), s.Committed, s.End)
	fmt.Fprintf(out, "HTTP 429 answers      %d; bursting devices' events via Batch: %s%%\n", s.HTTP429, strconv.FormatFloat(100*s.BurstViaBatch, 'f', 1, 64))
}
