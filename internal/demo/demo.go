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
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ampstream/ampstream/internal/app"
	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/metrics"
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
	var sum Summary
	start := time.Now()

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(o.Partitions), topic), kfake.SeedTopics(1, dlqTopic))
	if err != nil {
		return sum, fmt.Errorf("start in-process kafka: %w", err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	emu := emulator.New(emulator.DefaultConfig(), o.Log)
	emuCtx, stopEmu := context.WithCancel(context.Background())
	defer stopEmu()
	emuSrv, err := emulator.Start(emuCtx, "127.0.0.1:0", emu)
	if err != nil {
		return sum, fmt.Errorf("start amplitude emulator: %w", err)
	}

	cfg := config.Default()
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Topics = []string{topic}
	cfg.Kafka.Group = group
	cfg.Kafka.HeartbeatInterval = time.Second
	cfg.Kafka.SessionTimeout = 10 * time.Second
	cfg.Kafka.RebalanceTimeout = 15 * time.Second
	cfg.Amplitude.APIKey = "demo-api-key-0123456789abcdef"
	cfg.Amplitude.URL = emuSrv.URL()
	cfg.Amplitude.ThrottlePause = 5 * time.Second
	cfg.DLQ.Topic = dlqTopic
	cfg.Admin.Addr = "127.0.0.1:0"
	cfg.Shutdown.DrainTimeout = 10 * time.Second
	if err := cfg.Validate(); err != nil {
		return sum, fmt.Errorf("demo config: %w", err)
	}
	reg := prometheus.NewRegistry()
	a, err := app.New(cfg, o.Log, reg, o.Build)
	if err != nil {
		return sum, err
	}
	appCtx, stopApp := context.WithCancel(context.Background())
	defer stopApp()
	appDone := make(chan error, 1)
	go func() { appDone <- a.Run(appCtx) }()
	addrCtx, cancelAddr := context.WithTimeout(ctx, 10*time.Second)
	adminAddr, _ := a.AdminAddr(addrCtx)
	cancelAddr()

	fmt.Fprintf(o.Out, "ampstream demo: in-process Kafka %v (%d partitions), Amplitude emulator %s, status page http://%s/\n",
		brokers, o.Partitions, emuSrv.URL(), adminAddr)
	fmt.Fprintf(o.Out, "traffic: %d events/s over %d devices for %s, %d bursting devices × %d events, %d backfill events, invalid input mixed in\n\n",
		o.Rate, o.Devices, o.Duration, o.Bursters, o.BurstSize, o.Backfill)

	gen := traffic.New(uint64(time.Now().UnixNano()), o.Devices, 0.3, nil)
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond,
		BatchSize:    1000,
	}
	defer w.Close()

	var produced atomic.Int64
	var wg sync.WaitGroup
	progressDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		progress(o.Out, a, reg, emu, &produced, progressDone)
	}()
	var once sync.Once
	stopProgress := func() { once.Do(func() { close(progressDone); wg.Wait() }) }
	defer stopProgress()

	prodErr := produce(ctx, w, gen, o, &produced, &sum)
	if prodErr != nil {
		return sum, fmt.Errorf("produce: %w", prodErr)
	}
	expected := gen.Expected()

	// Wait for delivery: every valid event stored, every invalid one dead-lettered, offsets committed.
	end := endOffsets(brokers)
	deadline := time.Now().Add(90 * time.Second)
	for {
		rep := traffic.Check(emu, expected)
		committed := committedTotal(a)
		if (rep.Delivered >= rep.Expected && committed >= end) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}

	// SIGTERM path: drain, commit, leave.
	stopProgress()
	stopApp()
	if err := <-appDone; err != nil {
		return sum, fmt.Errorf("ampstream: %w", err)
	}
	stopEmu()
	_ = emuSrv.Wait()

	sum.Elapsed = time.Since(start)
	sum.Report = traffic.Check(emu, expected)
	snap := metrics.Snapshot(reg)
	for k, v := range snap {
		if len(k) > len("ampstream_dlq_events_total{") && k[:len("ampstream_dlq_events_total{")] == "ampstream_dlq_events_total{" {
			sum.DeadLettered += int(v)
		}
	}
	sum.HTTP429 = emu.Stats().ByStatus[429]
	sum.End = end
	sum.Committed = committedFromKafka(brokers)
	burstBatch, burstAll := 0, 0
	for i := 0; i < o.Bursters; i++ {
		for _, in := range emu.Events(traffic.BurstDeviceID(i)) {
			burstAll++
			if in.Route == "batch" {
				burstBatch++
			}
		}
	}
	if burstAll > 0 {
		sum.BurstViaBatch = float64(burstBatch) / float64(burstAll)
	}
	printSummary(o.Out, sum, emu.Stats())

	var errs []error
	if !sum.Report.OK() {
		errs = append(errs, fmt.Errorf("delivery check failed: %s", sum.Report))
	}
	if sum.DeadLettered != sum.Invalid {
		errs = append(errs, fmt.Errorf("dead-lettered %d events, want %d", sum.DeadLettered, sum.Invalid))
	}
	if sum.Committed != sum.End {
		errs = append(errs, fmt.Errorf("committed offsets sum to %d, end offsets to %d", sum.Committed, sum.End))
	}
	return sum, errors.Join(errs...)
}

// produce writes the traffic mix at the configured rate for the duration.
func produce(ctx context.Context, w *kafka.Writer, gen *traffic.Generator, o Options, produced *atomic.Int64, sum *Summary) error {
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

func progress(out io.Writer, a *app.App, reg *prometheus.Registry, emu *emulator.Emulator, produced *atomic.Int64, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s := metrics.Snapshot(reg)
		dlq := 0.0
		for k, v := range s {
			if len(k) > 27 && k[:27] == "ampstream_dlq_events_total{" {
				dlq += v
			}
		}
		var lag int64
		for _, p := range a.Consumer.Status() {
			lag += p.Lag
		}
		st := emu.Stats()
		fmt.Fprintf(out, "[%3ds] produced %7d | realtime %7.0f | batch %7.0f | dead-lettered %4.0f | lag %6d | in flight %6.0f | hot keys %3.0f | 429s %d\n",
			int(time.Since(start).Seconds()), produced.Load(),
			s["ampstream_events_forwarded_total{lane=realtime,outcome=accepted}"],
			s["ampstream_events_forwarded_total{lane=batch,outcome=accepted}"],
			dlq, lag, s["ampstream_inflight_events"], s["ampstream_hot_keys"], st.ByStatus[429])
	}
}

func committedTotal(a *app.App) int64 {
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
