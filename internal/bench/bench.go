// Package bench is ampstream's reproducible end-to-end benchmark (make
// bench). In one run it measures, on the same machine and broker:
//
//   - a baseline: the least a Kafka-to-HTTP forwarder can do (baseline.go);
//   - ampstream's throughput, in-process with every feature on, for a
//     batch-heavy and a realtime-heavy mix, against a trivial sink and
//     against the Amplitude emulator;
//   - realtime-lane latency, produce → acceptance, at a fixed rate;
//   - cost: peak RSS and CPU seconds per million events of an ampstream
//     child process, and allocations per event in-process.
//
// Every throughput run pre-produces its events into a fresh 12-partition
// topic before the forwarder starts, so it measures consume + deliver. Its
// clock starts when the consumer group generation is joined (the join itself
// takes about a heartbeat and is reported apart) and stops when every event
// is resolved (accepted by the sink or dead-lettered); the run then waits
// until the group's committed offsets equal the topic's end offsets, which
// is its completion condition.
//
// The machine is shared and noisy, so the headline number is the ratio of
// ampstream's throughput to the baseline measured in the same run.
//
// Concurrency: Run owns every goroutine, server and child process it starts
// and stops them before returning.
package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/app"
	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/metrics"
	"github.com/ampstream/ampstream/internal/sandbox"
)

// Options configure a benchmark run. Zero values take the defaults.
type Options struct {
	// Events is the size of the baseline and batch-heavy runs (default 1M).
	Events int
	// EmulatorEvents is the size of the batch-heavy run against the
	// emulator (default Events/2: the emulator validates every event on the
	// same two cores, so this run is the slowest per event).
	EmulatorEvents int
	// RealtimeEvents is the size of the realtime-heavy runs (default 250k).
	RealtimeEvents int
	// Quick is the CI smoke mode: 20k events per run, a 3 s latency run,
	// the trivial sink inflates and counts every body.
	Quick bool
	// Pairs is how many times the batch-heavy trivial-sink run is repeated,
	// each between two baseline runs (default 3; 1 with Quick). The
	// summary takes medians, which a shared machine's load spikes need; the
	// median of two is their mean, which one disturbed run moves.
	Pairs int
	// Partitions of every benchmark topic (default 12).
	Partitions int
	// Brokers, when set (KAFKA_BROKERS), are the brokers to run against.
	Brokers string
	// BrokerCommand, without Brokers, is a command (executable and
	// arguments) that runs ServeBroker: the kfake broker then runs in a
	// child process, as a real broker would, not in the process whose
	// forwarders it serves. Without either, kfake runs in this process.
	BrokerCommand []string

	SkipBaseline bool
	SkipEmulator bool
	SkipRealtime bool // the realtime-heavy throughput runs
	SkipLatency  bool
	SkipCost     bool

	// LatencyRate (events/s, default 5000) and LatencyDuration (default
	// 12 s) shape the latency run.
	LatencyRate     int
	LatencyDuration time.Duration

	// Binary is an ampstream executable; the cost run starts it as a child
	// ("run" with flags) to measure its own RSS and CPU. Empty: the cost is
	// the whole benchmark process's during the in-process batch-heavy run.
	Binary string
	// Benthos is a Benthos executable; when set, it runs once over the
	// baseline's topic (benthos-peer.yaml) after the first baseline run.
	Benthos string
	// CPUProfile, when set, receives a pprof CPU profile of the in-process
	// batch-heavy run against the trivial sink.
	CPUProfile io.Writer
	// MemProfile, when set, receives the allocation profile ("allocs",
	// cumulative since the process started) right after that run.
	MemProfile io.Writer
	// CountEvents makes the trivial sink inflate gzip bodies to count
	// events (always on in Quick mode). It costs CPU the forwarder then
	// lacks.
	CountEvents bool
	// PhaseTimeout bounds each run (default 3 min).
	PhaseTimeout time.Duration
	Seed         uint64

	// Progress receives human-readable progress lines.
	Progress io.Writer
	Log      zerolog.Logger
}

func (o *Options) defaults() {
	if o.Quick {
		if o.Events <= 0 {
			o.Events = 20_000
		}
		if o.RealtimeEvents <= 0 {
			o.RealtimeEvents = 20_000
		}
		if o.LatencyDuration <= 0 {
			o.LatencyDuration = 3 * time.Second
		}
		o.CountEvents = true
		if o.Pairs <= 0 {
			o.Pairs = 1
		}
	}
	if o.Pairs <= 0 {
		o.Pairs = 3
	}
	if o.Events <= 0 {
		o.Events = 1_000_000
	}
	if o.EmulatorEvents <= 0 {
		o.EmulatorEvents = max(o.Events/2, 1)
	}
	if o.RealtimeEvents <= 0 {
		o.RealtimeEvents = 250_000
	}
	if o.Partitions <= 0 {
		o.Partitions = 12
	}
	if o.LatencyRate <= 0 {
		o.LatencyRate = 5000
	}
	if o.LatencyDuration <= 0 {
		o.LatencyDuration = 12 * time.Second
	}
	if o.PhaseTimeout <= 0 {
		o.PhaseTimeout = 3 * time.Minute
	}
	if o.Seed == 0 {
		o.Seed = 20261127
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Result is the whole benchmark, as written to the JSON file.
type Result struct {
	Started   time.Time `json:"started"`
	Seconds   float64   `json:"seconds"`
	GoVersion string    `json:"go_version"`
	NumCPU    int       `json:"num_cpu"`
	MaxProcs  int       `json:"gomaxprocs"`
	Broker    string    `json:"broker"`
	Quick     bool      `json:"quick"`

	// Baselines and BatchTrivial alternate: baseline, batch_trivial,
	// baseline, batch_trivial, …, baseline (Options.Pairs pairs), so that
	// every ampstream run has a baseline right before and right after it.
	// BatchTrivial[0] is the profiled one.
	Baselines []*Throughput `json:"baselines,omitempty"`
	// BaselineConn is the baseline reading through internal/fetch (a
	// kafka-go Conn in the partition goroutine, as ampstream reads) instead
	// of kafka-go's Reader: the stronger yardstick, run once.
	BaselineConn     *Throughput   `json:"baseline_conn,omitempty"`
	BatchTrivial     []*Throughput `json:"batch_trivial,omitempty"`
	BatchEmulator    *Throughput   `json:"batch_emulator,omitempty"`
	RealtimeTrivial  *Throughput   `json:"realtime_trivial,omitempty"`
	RealtimeEmulator *Throughput   `json:"realtime_emulator,omitempty"`
	Latency          *LatencyRun   `json:"latency,omitempty"`
	Cost             *Cost         `json:"cost,omitempty"`
	// Benthos is the Benthos peer over the baseline's topic (--benthos).
	Benthos *PeerRun `json:"benthos,omitempty"`

	// LoadAvg is the machine's 1-minute load average after each run: the
	// benchmark shares the machine, and a load well above NumCPU means
	// every figure of that run is pessimistic (the ratio less so).
	LoadAvg []PhaseLoad `json:"load_average"`

	Summary Summary `json:"summary"`
}

// PhaseLoad is the load average seen after a run.
type PhaseLoad struct {
	Phase string  `json:"phase"`
	Load1 float64 `json:"load1"`
	// CPUPressure is /proc/pressure/cpu "some avg10": the percentage of
	// the last 10 s in which a runnable task waited for a CPU.
	CPUPressure float64 `json:"cpu_pressure_pct"`
}

// Summary holds the numbers of the BENCH line; 0 means not measured.
type Summary struct {
	E2EEPS      float64 `json:"e2e_eps"`      // ampstream, batch-heavy mix, trivial sink: median of the runs
	BaselineEPS float64 `json:"baseline_eps"` // the baseline on the same mix: median of the runs
	// Ratio is the median over the ampstream runs of its eps over the mean
	// eps of the two baseline runs around it (Ratios lists them).
	Ratio   float64   `json:"ratio"`
	Ratios  []float64 `json:"ratios"`
	EmuEPS  float64   `json:"emu_eps"`   // ampstream, batch-heavy mix, emulator
	RTP99MS float64   `json:"rt_p99_ms"` // realtime lane produce→acceptance p99
	RSSMB   float64   `json:"rss_mb"`    // peak RSS, see Cost.Method
	// CPURatio is the baseline's whole-process CPU per event over
	// batch_trivial's, paired like Ratio (not on the BENCH line). CPU time suffers much less
	// than wall time when other jobs load the machine, so when the load
	// average is far above the CPU count this is the steadier comparison.
	// Both include the in-process broker and sink, which pulls it toward 1.
	CPURatio float64 `json:"cpu_ratio"`
	CPUSPerM float64 `json:"cpu_s_per_M"` // CPU seconds per million events, see Cost.Method
	// BaselineConnEPS and RatioConn (not on the BENCH line) compare with
	// BaselineConn: E2EEPS over its eps, a run minutes apart, not paired.
	BaselineConnEPS float64 `json:"baseline_conn_eps"`
	RatioConn       float64 `json:"ratio_conn"`
}

// Line is the one-line summary printed on stdout.
func (s Summary) Line() string {
	return fmt.Sprintf("BENCH e2e_eps=%.0f baseline_eps=%.0f ratio=%.2f emu_eps=%.0f rt_p99_ms=%.1f rss_mb=%.0f cpu_s_per_M=%.2f",
		s.E2EEPS, s.BaselineEPS, s.Ratio, s.EmuEPS, s.RTP99MS, s.RSSMB, s.CPUSPerM)
}

// Throughput is one throughput run.
type Throughput struct {
	Name     string   `json:"name"`
	Forward  string   `json:"forwarder"` // "baseline" or "ampstream"
	Sink     string   `json:"sink"`      // "trivial" or "emulator"
	Produced Produced `json:"produced"`
	// JoinSeconds: forwarder start → consumer group generation joined.
	JoinSeconds float64 `json:"join_seconds"`
	// Seconds: joined → every event resolved (accepted or dead-lettered).
	Seconds float64 `json:"seconds"`
	// EPS is Produced.Events / Seconds.
	EPS float64 `json:"eps"`
	// MBPerSecond is produced value bytes / Seconds.
	MBPerSecond float64 `json:"mb_per_second"`
	// CommitSeconds: joined → committed offsets == end offsets (commits
	// happen once a second, so this trails Seconds by up to ~1 s).
	CommitSeconds float64 `json:"commit_seconds"`
	// LastPercentSeconds is how long the last 1 % of the events took to
	// resolve (sampled every 10 ms): the run's tail, where lingering
	// partial requests and chains of them show.
	LastPercentSeconds float64 `json:"last_percent_seconds"`
	Resolved           int64   `json:"resolved"`
	// PeakInflightEvents (and its MB) is the most events ampstream held
	// fetched but unresolved, sampled every 10 ms (limits.max_inflight_*).
	PeakInflightEvents int     `json:"peak_inflight_events,omitempty"`
	PeakInflightMB     float64 `json:"peak_inflight_mb,omitempty"`
	// Accepted and DeadLettered come from ampstream's metrics.
	Accepted     map[string]int64   `json:"accepted_by_lane,omitempty"`
	DeadLettered int64              `json:"dead_lettered"`
	Requests     map[string]int64   `json:"requests,omitempty"` // ampstream_amplitude_requests_total by lane/code
	Counters     map[string]float64 `json:"counters,omitempty"` // other ampstream counters of interest
	SinkStats    *SinkStats         `json:"sink_stats,omitempty"`
	EmuStats     *emulator.Stats    `json:"emulator_stats,omitempty"`
	Process      ProcessCost        `json:"process"`
	Profiled     bool               `json:"cpu_profiled,omitempty"`
}

// LatencyRun is the realtime-lane latency run.
type LatencyRun struct {
	Rate         int     `json:"rate_eps"`
	Seconds      float64 `json:"produce_seconds"`
	Produced     int     `json:"produced"`
	AchievedRate float64 `json:"achieved_rate_eps"`
	// Realtime and Batch: event "time" (stamped at generation) → arrival
	// at the sink, per lane of the request that carried it.
	Realtime Latency `json:"realtime_lane"`
	Batch    Latency `json:"batch_lane"`
	// ProduceAck: generation → the producer's WriteMessages returned (the
	// broker acknowledged); part of the figures above.
	ProduceAck Latency `json:"produce_ack"`
}

// Cost is the resource use of ampstream on the batch-heavy mix.
type Cost struct {
	// Method is "child-process" (an ampstream process of its own: VmHWM
	// from /proc/<pid>/status once everything is committed, and
	// user+system CPU from its rusage over its whole life, join and
	// shutdown included) or "in-process" (the whole benchmark
	// process during the in-process batch-heavy run: the broker, the sink
	// and the broker's copy of the topic included, so an upper bound).
	Method         string  `json:"method"`
	Events         int     `json:"events"`
	Seconds        float64 `json:"seconds,omitempty"`
	PeakRSSMB      float64 `json:"peak_rss_mb"`
	CPUSeconds     float64 `json:"cpu_seconds"`
	CPUSecondsPerM float64 `json:"cpu_s_per_million_events"`
	// MallocsPerEvent is the in-process batch-heavy run's whole-process
	// heap allocations per event (the broker's and the sink's included);
	// BaselineMallocsPerEvent is the same count for the baseline run.
	MallocsPerEvent float64 `json:"mallocs_per_event"`
	// RSSTimelineMB samples the child's RSS every 500 ms; ChildMetrics are
	// its go_memstats_* and process_* gauges, scraped from its /metrics
	// once everything was committed.
	RSSTimelineMB           []float64          `json:"child_rss_timeline_mb,omitempty"`
	ChildMetrics            map[string]float64 `json:"child_metrics,omitempty"`
	BaselineMallocsPerEvent float64            `json:"baseline_mallocs_per_event,omitempty"`
}

type runner struct {
	o   Options
	c   *cluster
	out io.Writer
	log zerolog.Logger
	res *Result
}

// Run executes the benchmark. It returns the results gathered so far with
// an error if a run failed to complete.
func Run(ctx context.Context, o Options) (*Result, error) {
	o.defaults()
	res := &Result{
		Started: time.Now().UTC(), GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(),
		MaxProcs: runtime.GOMAXPROCS(0), Quick: o.Quick,
	}
	c, err := startCluster(ctx, o.Brokers, o.BrokerCommand)
	if err != nil {
		return res, err
	}
	defer c.close()
	res.Broker = c.kind()
	r := &runner{o: o, c: c, out: o.Progress, log: o.Log, res: res}
	fmt.Fprintf(r.out, "ampstream-bench: broker %s %v, %d partitions, %d events (batch-heavy; %d against the emulator), %d (realtime-heavy), GOMAXPROCS=%d, load average %.1f\n",
		res.Broker, c.brokers, o.Partitions, o.Events, o.EmulatorEvents, o.RealtimeEvents, res.MaxProcs, loadAvg())
	err = r.all(ctx)
	res.Seconds = time.Since(res.Started).Seconds()
	r.summarize()
	return res, err
}

func (r *runner) all(ctx context.Context) error {
	o := r.o
	type step struct {
		name string
		skip bool
		run  func() error
	}
	var err error
	var base Produced
	defer func() {
		if base.Topic != "" {
			r.c.deleteTopics(context.WithoutCancel(ctx), base.Topic)
		}
	}()
	steps := []step{{"producing the baseline's topic", o.SkipBaseline, func() error {
		base, err = r.baselineTopic(ctx)
		return err
	}}, {"warm-up", false, func() error { return r.warmUp(ctx, base) }}, {"baseline 1", o.SkipBaseline, func() error {
		return r.addBaseline(ctx, base, "baseline_1")
	}}, {"baseline on the Conn fetch path", o.SkipBaseline, func() error {
		t, err := r.baseline(ctx, base, "baseline_conn", true)
		if t != nil && err == nil {
			r.res.BaselineConn = t
		}
		return err
	}}}
	for i := 1; i <= o.Pairs; i++ {
		var profile io.Writer
		if i == 1 {
			profile = o.CPUProfile
		}
		steps = append(steps, step{fmt.Sprintf("batch-heavy, trivial sink %d", i), false, func() error {
			// The baseline's topic, when there is one: both forwarders then
			// read the same bytes from the same broker state (a topic
			// read for the first time right after it was produced costs the
			// broker more: see README.md, "Reading the numbers").
			t, err := r.ampstream(ctx, fmt.Sprintf("batch_trivial_%d", i), MixBatch, o.Events, false, profile, base)
			if t != nil && err == nil {
				r.res.BatchTrivial = append(r.res.BatchTrivial, t)
			}
			return err
		}})
		// The baseline again, right after the run it is the yardstick of:
		// the machine is shared, and its load drifts within minutes.
		steps = append(steps, step{fmt.Sprintf("baseline %d", i+1), o.SkipBaseline, func() error {
			return r.addBaseline(ctx, base, fmt.Sprintf("baseline_%d", i+1))
		}})
	}
	steps = append(steps, []step{
		// After the pairs: its 30-odd seconds at full CPU leave the broker's
		// heap and the machine's load in a state the run after it pays for.
		{"benthos", o.SkipBaseline || o.Benthos == "", func() error {
			r.res.Benthos, err = r.benthos(ctx, base)
			return err
		}},
		{"the baseline's topic deleted", o.SkipBaseline, func() error {
			r.c.deleteTopics(context.WithoutCancel(ctx), base.Topic)
			base.Topic = ""
			return nil
		}},
		{"batch-heavy, emulator", o.SkipEmulator, func() error {
			r.res.BatchEmulator, err = r.ampstream(ctx, "batch_emulator", MixBatch, o.EmulatorEvents, true, nil, Produced{})
			return err
		}},
		{"realtime-heavy, trivial sink", o.SkipRealtime, func() error {
			r.res.RealtimeTrivial, err = r.ampstream(ctx, "realtime_trivial", MixRealtime, o.RealtimeEvents, false, nil, Produced{})
			return err
		}},
		{"realtime-heavy, emulator", o.SkipRealtime || o.SkipEmulator, func() error {
			r.res.RealtimeEmulator, err = r.ampstream(ctx, "realtime_emulator", MixRealtime, o.RealtimeEvents, true, nil, Produced{})
			return err
		}},
		{"latency", o.SkipLatency, func() error { r.res.Latency, err = r.latency(ctx); return err }},
		{"cost", o.SkipCost, func() error { r.res.Cost, err = r.cost(ctx); return err }},
	}...)
	for _, s := range steps {
		if s.skip {
			continue
		}
		if err := s.run(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		r.state(s.name)
	}
	return nil
}

// state prints what the process holds between runs: a run that leaks
// goroutines or memory skews every run after it.
func (r *runner) state(after string) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	load, psi := loadAvg(), cpuPressure()
	r.res.LoadAvg = append(r.res.LoadAvg, PhaseLoad{Phase: after, Load1: load, CPUPressure: psi})
	fmt.Fprintf(r.out, "  (after %s: %d goroutines, heap in use %.0f MB; machine load average %.1f on %d CPUs, CPU pressure %.0f %%)\n",
		after, runtime.NumGoroutine(), float64(ms.HeapInuse)/1e6, load, runtime.NumCPU(), psi)
}

// warmUp runs the baseline once, unrecorded, so the first measured run does
// not pay for first-use costs (the broker's offsets topic and group
// coordinator, connection pools, the runtime's heap growth). It reads base,
// the topic the measured pairs share, when there is one: kfake serves a
// topic's first read at a higher cost (README.md, "Reading the numbers"),
// which its line shows. Else it reads a small topic of its own.
func (r *runner) warmUp(ctx context.Context, base Produced) error {
	ctx, cancel := r.phaseCtx(ctx)
	defer cancel()
	p, done, err := r.topic(ctx, base, "bench-warmup", MixBatch, min(r.o.Events, 20_000))
	defer done()
	if err != nil {
		return err
	}
	_, err = r.baseline(ctx, p, "warm-up", false)
	return err
}

// topic returns shared when it names a topic, else produces n events of mix
// into a topic of its own, which done deletes (a shared topic is left to
// its owner).
func (r *runner) topic(ctx context.Context, shared Produced, prefix string, mix Mix, n int) (p Produced, done func(), err error) {
	if shared.Topic != "" {
		return shared, func() {}, nil
	}
	p, err = r.c.produce(ctx, prefix, mix, r.o.Seed, n, r.o.Partitions)
	done = func() { r.c.deleteTopics(context.WithoutCancel(ctx), p.Topic) }
	if err == nil {
		r.produced(p)
	}
	return p, done, err
}

func (r *runner) addBaseline(ctx context.Context, base Produced, name string) error {
	t, err := r.baseline(ctx, base, name, false)
	if t != nil && err == nil {
		r.res.Baselines = append(r.res.Baselines, t)
	}
	return err
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *runner) summarize() {
	s := &r.res.Summary
	var e2e, base []float64
	for _, t := range r.res.BatchTrivial {
		e2e = append(e2e, t.EPS)
	}
	for _, t := range r.res.Baselines {
		base = append(base, t.EPS)
	}
	s.E2EEPS, s.BaselineEPS = median(e2e), median(base)
	// Each ampstream run against the mean of the baselines around it.
	bl, bt := r.res.Baselines, r.res.BatchTrivial
	var cpuRatios []float64
	s.Ratios = nil
	for i := 0; i < len(bt) && i+1 < len(bl); i++ {
		around := (bl[i].EPS + bl[i+1].EPS) / 2
		if around > 0 {
			s.Ratios = append(s.Ratios, bt[i].EPS/around)
		}
		if c := bt[i].Process.CPUSecondsPerM; c > 0 {
			cpuRatios = append(cpuRatios, (bl[i].Process.CPUSecondsPerM+bl[i+1].Process.CPUSecondsPerM)/2/c)
		}
	}
	s.Ratio, s.CPURatio = median(s.Ratios), median(cpuRatios)
	if t := r.res.BatchEmulator; t != nil {
		s.EmuEPS = t.EPS
	}
	if l := r.res.Latency; l != nil {
		s.RTP99MS = l.Realtime.P99MS
	}
	if c := r.res.Cost; c != nil {
		s.RSSMB, s.CPUSPerM = c.PeakRSSMB, c.CPUSecondsPerM
	}
	if t := r.res.BaselineConn; t != nil && t.EPS > 0 {
		s.BaselineConnEPS, s.RatioConn = t.EPS, s.E2EEPS/t.EPS
	}
}

// phaseCtx bounds one run.
func (r *runner) phaseCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.o.PhaseTimeout)
}

// baselineTopic pre-produces the baseline's topic; both baseline runs
// (before and after the batch-heavy ampstream run) consume it, each with a
// group of its own.
func (r *runner) baselineTopic(ctx context.Context) (Produced, error) {
	fmt.Fprintf(r.out, "\n[baseline] producing %d batch-heavy events…\n", r.o.Events)
	p, err := r.c.produce(ctx, "bench-baseline", MixBatch, r.o.Seed, r.o.Events, r.o.Partitions)
	if err == nil {
		r.produced(p)
	}
	return p, err
}

// baseline runs the baseline forwarder once; conn selects the Conn fetch
// path instead of kafka-go's Reader.
func (r *runner) baseline(ctx context.Context, p Produced, name string, conn bool) (*Throughput, error) {
	ctx, cancel := r.phaseCtx(ctx)
	defer cancel()
	fmt.Fprintf(r.out, "\n[%s] minimal forwarder on %s\n", name, p.Topic)
	s, err := startSink(r.o.CountEvents, false)
	if err != nil {
		return nil, err
	}
	defer func() { _ = s.close() }()
	group := uniqueName("bench-baseline")
	b := newBaseline(r.c.brokers, p.Topic, group, s.url(), r.log)
	b.conn = conn
	runtime.GC()
	before := r.c.usage()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- b.run(runCtx) }()
	t := &Throughput{Name: name, Forward: "baseline", Sink: "trivial", Produced: p}
	if conn {
		t.Forward = "baseline_conn"
	}
	joined, err := waitFor(ctx, time.Millisecond*5, func() bool { return b.joined.Load() != 0 })
	if err == nil {
		t.JoinSeconds = joined.Sub(before.at).Seconds()
		var resolvedAt, at99 time.Time
		resolvedAt, at99, err = r.track(ctx, name, p.Events, joined, func() int64 { return b.resolved.Load() })
		t.Seconds, t.LastPercentSeconds = resolvedAt.Sub(joined).Seconds(), resolvedAt.Sub(at99).Seconds()
	}
	if err == nil {
		var committedAt time.Time
		committedAt, err = r.c.waitCommitted(ctx, group, p.Topic, p.end)
		t.CommitSeconds = committedAt.Sub(joined).Seconds()
	}
	after := r.c.usage()
	stop()
	if rerr := <-done; err == nil && rerr != nil && ctx.Err() == nil {
		err = rerr
	}
	if err != nil {
		return t, err
	}
	t.Resolved = b.resolved.Load()
	ss := s.stats()
	t.SinkStats = &ss
	r.finish(t, before, after)
	return t, nil
}

func (r *runner) produced(p Produced) {
	fmt.Fprintf(r.out, "  produced %d events (%d invalid, %.0f MB) into %s in %.1fs\n",
		p.Events, p.Invalid, float64(p.Bytes)/1e6, p.Topic, p.Seconds)
}

func (r *runner) finish(t *Throughput, before, after usage) {
	if t.Seconds > 0 {
		t.EPS = float64(t.Produced.Events) / t.Seconds
		t.MBPerSecond = float64(t.Produced.Bytes) / 1e6 / t.Seconds
	}
	t.Process = costBetween(before, after, t.Produced.Events)
	p := t.Process
	fmt.Fprintf(r.out, "  => %s: %.0f events/s (%.1f MB/s) over %.2fs (the last 1 %% in %.2fs) after a %.1fs join; committed at %.2fs; process CPU %.2fs (%.2f s/M events), %.1f mallocs (%.0f B)/event, %d minor page faults",
		t.Name, t.EPS, t.MBPerSecond, t.Seconds, t.LastPercentSeconds, t.JoinSeconds, t.CommitSeconds, p.CPUSeconds, p.CPUSecondsPerM, p.MallocsPerEvent, p.AllocBytesPerEvent, p.MinorFaults)
	if r.c.child != nil {
		fmt.Fprintf(r.out, "; broker CPU %.2fs (%.2f s/M events), %d minor page faults", p.BrokerCPUSeconds, p.BrokerCPUSecondsPerM, p.BrokerMinorFaults)
	}
	fmt.Fprintln(r.out)
}

// waitFor polls cond every period until it holds, and returns when it did.
func waitFor(ctx context.Context, period time.Duration, cond func() bool) (time.Time, error) {
	for {
		if cond() {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(period):
		}
	}
}

// track polls resolved until it reaches n, printing progress once a second,
// and returns when it did and when 99 % of n were resolved.
func (r *runner) track(ctx context.Context, name string, n int, since time.Time, resolved func() int64) (at, at99 time.Time, err error) {
	next := time.Now().Add(time.Second)
	at, err = waitFor(ctx, 10*time.Millisecond, func() bool {
		v := resolved()
		now := time.Now()
		if at99.IsZero() && v*100 >= int64(n)*99 {
			at99 = now
		}
		if now.After(next) {
			next = next.Add(time.Second)
			el := now.Sub(since).Seconds()
			fmt.Fprintf(r.out, "  [%s %4.1fs] resolved %8d / %d (%.0f/s)\n", name, el, v, n, float64(v)/el)
		}
		return v >= int64(n)
	})
	if err != nil {
		return at, at99, fmt.Errorf("%d of %d events resolved: %w", resolved(), n, err)
	}
	return at, at99, nil
}

// appConfig is the sandbox's configuration (sandbox.Config) pointed at the
// benchmark's topic and sink: every feature stays on.
func (r *runner) appConfig(topic, group, dlq, url string) config.Config {
	cfg := sandbox.Config(r.c.brokers, topic, group, dlq, url)
	cfg.Log.Level = "warn"
	return cfg
}

// benchEmulator is the emulator with Amplitude's documented limits and
// bounded memory: no raw events, a one-entry inspection log. Its limits are
// not raised: the mixes stay below them (see burstPerDevice), and any 429
// shows in the run's emulator stats.
func benchEmulator() emulator.Config {
	ec := emulator.DefaultConfig()
	ec.KeepRaw = false
	ec.MaxLogEvents = 1
	return ec
}

// stopTimeout bounds an in-process App's shutdown: its 10 s drain
// (sandbox.Config), then the commit and the group leave.
const stopTimeout = 30 * time.Second

// build is what the in-process App reports as its version.
var build = app.Build{Version: "bench", Commit: "bench"}

// ampstream runs the real pipeline in-process on a pre-produced topic: on
// shared when it names one (left for its owner to delete), else on one it
// produces with mix and n events.
func (r *runner) ampstream(ctx context.Context, name string, mix Mix, n int, emu bool, profile io.Writer, shared Produced) (*Throughput, error) {
	ctx, cancel := r.phaseCtx(ctx)
	defer cancel()
	sinkName := "trivial"
	if emu {
		sinkName = "emulator"
	}
	fmt.Fprintf(r.out, "\n[%s] ampstream, %s mix, %s sink\n", name, mix, sinkName)
	p, done, err := r.topic(ctx, shared, "bench-"+strings.ReplaceAll(name, "_", "-"), mix, n)
	defer done()
	if err != nil {
		return nil, err
	}
	dlq := uniqueName("bench-dlq")
	defer r.c.deleteTopics(context.WithoutCancel(ctx), dlq)
	if err := r.c.createTopic(ctx, dlq, 1); err != nil {
		return nil, err
	}

	var url string
	var s *sink
	var e *sandbox.Emulator
	if emu {
		if e, err = sandbox.StartEmulator(benchEmulator(), r.log); err != nil {
			return nil, err
		}
		defer func() { _ = e.Close() }()
		url = e.URL()
	} else {
		if s, err = startSink(r.o.CountEvents, false); err != nil {
			return nil, err
		}
		defer func() { _ = s.close() }()
		url = s.url()
	}

	group := uniqueName("bench-" + name)
	cfg := r.appConfig(p.Topic, group, dlq, url)
	t := &Throughput{Name: name, Forward: "ampstream", Sink: sinkName, Produced: p, Profiled: profile != nil}
	runtime.GC()
	before := r.c.usage()
	if profile != nil {
		if err := pprof.StartCPUProfile(profile); err != nil {
			return nil, fmt.Errorf("start CPU profile: %w", err)
		}
	}
	a, err := sandbox.StartApp(cfg, r.log, build)
	if err != nil {
		if profile != nil {
			pprof.StopCPUProfile()
		}
		return nil, err
	}
	defer func() { _ = a.Stop(stopTimeout) }()

	resolved := resolvedCounter(a.Metrics)
	joined, err := waitFor(ctx, 5*time.Millisecond, a.Consumer.Ready)
	if err == nil {
		t.JoinSeconds = joined.Sub(before.at).Seconds()
		var resolvedAt, at99 time.Time
		resolvedAt, at99, err = r.track(ctx, name, p.Events, joined, func() int64 {
			if ev, by := a.Consumer.Inflight(); ev > t.PeakInflightEvents {
				t.PeakInflightEvents, t.PeakInflightMB = ev, float64(by)/1e6
			}
			return resolved()
		})
		t.Seconds, t.LastPercentSeconds = resolvedAt.Sub(joined).Seconds(), resolvedAt.Sub(at99).Seconds()
	}
	if err == nil {
		var committedAt time.Time
		committedAt, err = r.c.waitCommitted(ctx, group, p.Topic, p.end)
		t.CommitSeconds = committedAt.Sub(joined).Seconds()
	}
	if profile != nil {
		pprof.StopCPUProfile()
		if r.o.MemProfile != nil {
			if err := pprof.Lookup("allocs").WriteTo(r.o.MemProfile, 0); err != nil {
				fmt.Fprintf(r.out, "  allocation profile: %v\n", err)
			}
		}
	}
	after := r.c.usage()
	if rerr := a.Stop(stopTimeout); err == nil && rerr != nil {
		err = fmt.Errorf("ampstream: %w", rerr)
	}
	t.Resolved = resolved()
	r.collect(t, metrics.Snapshot(a.Reg))
	if s != nil {
		ss := s.stats()
		t.SinkStats = &ss
	}
	if e != nil {
		st := e.Stats()
		t.EmuStats = &st
	}
	if err != nil {
		return t, err
	}
	r.finish(t, before, after)
	r.lanes(t)
	return t, nil
}

// collect copies the interesting ampstream counters.
func (r *runner) collect(t *Throughput, snap map[string]float64) {
	t.Accepted, t.Requests, t.Counters = map[string]int64{}, map[string]int64{}, map[string]float64{}
	for k, v := range snap {
		switch {
		case strings.HasPrefix(k, "ampstream_events_forwarded_total{"):
			if lane, ok := strings.CutSuffix(strings.TrimPrefix(k, "ampstream_events_forwarded_total{lane="), ",outcome=accepted}"); ok {
				t.Accepted[lane] = int64(v)
			} else {
				t.Counters[k] = v
			}
		case strings.HasPrefix(k, "ampstream_dlq_events_total{"):
			t.DeadLettered += int64(v)
		case strings.HasPrefix(k, "ampstream_amplitude_requests_total{"):
			l := strings.TrimSuffix(strings.TrimPrefix(k, "ampstream_amplitude_requests_total{"), "}")
			t.Requests[l] = int64(v)
		case strings.HasPrefix(k, "ampstream_lane_switches_total"), strings.HasPrefix(k, "ampstream_kafka_fetch_paused_total"),
			strings.HasPrefix(k, "ampstream_amplitude_throttled_events_total"), strings.HasPrefix(k, "ampstream_kafka_commits_total"),
			strings.HasPrefix(k, "ampstream_events_consumed_total"), strings.HasPrefix(k, "ampstream_dlq_write_errors_total"):
			t.Counters[k] = v
		}
	}
}

func (r *runner) lanes(t *Throughput) {
	fmt.Fprintf(r.out, "     lanes: realtime %d, batch %d accepted; %d dead-lettered; requests %v; lane switches to batch %.0f, to realtime %.0f; peak in flight %d events (%.0f MB); fetch paused %.0f times\n",
		t.Accepted["realtime"], t.Accepted["batch"], t.DeadLettered, t.Requests,
		t.Counters["ampstream_lane_switches_total{to=batch}"], t.Counters["ampstream_lane_switches_total{to=realtime}"],
		t.PeakInflightEvents, t.PeakInflightMB, t.Counters["ampstream_kafka_fetch_paused_total"])
	if t.EmuStats != nil {
		fmt.Fprintf(r.out, "     emulator: ingested %d, duplicates %d, throttled %d, invalid %d, statuses %v\n",
			t.EmuStats.Ingested, t.EmuStats.Duplicates, t.EmuStats.Throttled, t.EmuStats.Invalid, t.EmuStats.ByStatus)
	}
}

// latency produces a realtime-heavy mix at a fixed rate while ampstream
// consumes it, and summarises produce→acceptance per lane. The producer
// stamps each event's "time" field at generation (ms); the sink subtracts
// it from the arrival time of the request that carried the event.
func (r *runner) latency(ctx context.Context) (*LatencyRun, error) {
	ctx, cancel := r.phaseCtx(ctx)
	defer cancel()
	o := r.o
	fmt.Fprintf(r.out, "\n[latency] ampstream, realtime-heavy mix at %d events/s for %s, trivial sink\n", o.LatencyRate, o.LatencyDuration)
	topic, dlq := uniqueName("bench-latency"), uniqueName("bench-dlq")
	defer r.c.deleteTopics(context.WithoutCancel(ctx), topic, dlq)
	if err := r.c.createTopic(ctx, topic, o.Partitions); err != nil {
		return nil, err
	}
	if err := r.c.createTopic(ctx, dlq, 1); err != nil {
		return nil, err
	}
	s, err := startSink(true, true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = s.close() }()
	cfg := r.appConfig(topic, uniqueName("bench-latency"), dlq, s.url())
	a, err := sandbox.StartApp(cfg, r.log, build)
	if err != nil {
		return nil, err
	}
	defer func() { _ = a.Stop(stopTimeout) }()
	if _, err := waitFor(ctx, 5*time.Millisecond, a.Consumer.Ready); err != nil {
		return nil, err
	}
	// Let every partition reader make its first fetch before the clock runs.
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	w := r.c.writer(topic)
	w.BatchSize, w.BatchTimeout = 100, time.Millisecond
	defer func() { _ = w.Close() }()
	total := int(float64(o.LatencyRate) * o.LatencyDuration.Seconds())
	gen := newGenerator(MixRealtime, o.Seed+1, total)
	lr := &LatencyRun{Rate: o.LatencyRate}
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	var batch []kafka.Message
	var ackMS []float64
	for lr.Produced < total {
		select {
		case <-ctx.Done():
			tick.Stop()
			return nil, ctx.Err()
		case <-tick.C:
		}
		due := min(int(float64(o.LatencyRate)*time.Since(start).Seconds()), total) - lr.Produced
		genAt := time.Now()
		batch = batch[:0]
		for range due {
			batch = append(batch, gen.next())
		}
		if len(batch) == 0 {
			continue
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			tick.Stop()
			return nil, writeErr(err)
		}
		lr.Produced += len(batch)
		ack := float64(time.Since(genAt).Microseconds()) / 1000
		for range batch {
			ackMS = append(ackMS, ack)
		}
	}
	tick.Stop()
	lr.Seconds = time.Since(start).Seconds()
	lr.AchievedRate = float64(lr.Produced) / lr.Seconds
	resolved := resolvedCounter(a.Metrics)
	_, err = waitFor(ctx, 10*time.Millisecond, func() bool { return resolved() >= int64(lr.Produced) })
	if err != nil {
		return nil, fmt.Errorf("latency run did not resolve its %d events: %w", lr.Produced, err)
	}
	lr.Realtime, lr.Batch = s.latencies()
	lr.ProduceAck = summarizeFloat(ackMS)
	fmt.Fprintf(r.out, "  => produced %d at %.0f/s; realtime lane (%d events) p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms; batch lane (%d events) p50 %.0f ms, p99 %.0f ms\n",
		lr.Produced, lr.AchievedRate, lr.Realtime.Events, lr.Realtime.P50MS, lr.Realtime.P90MS, lr.Realtime.P99MS, lr.Realtime.MaxMS,
		lr.Batch.Events, lr.Batch.P50MS, lr.Batch.P99MS)
	fmt.Fprintf(r.out, "     of which producing (generation → broker ack): p50 %.1f ms, p99 %.1f ms\n", lr.ProduceAck.P50MS, lr.ProduceAck.P99MS)
	return lr, nil
}

// cost measures ampstream's own RSS and CPU on the batch-heavy mix: as a
// child process when a binary is known, else from the in-process run.
func (r *runner) cost(ctx context.Context) (*Cost, error) {
	c := &Cost{}
	if len(r.res.BatchTrivial) > 0 {
		c.MallocsPerEvent = r.res.BatchTrivial[0].Process.MallocsPerEvent
	}
	if len(r.res.Baselines) > 0 {
		c.BaselineMallocsPerEvent = r.res.Baselines[0].Process.MallocsPerEvent
	}
	if r.o.Binary == "" {
		bt := r.res.BatchTrivial[0]
		c.Method = "in-process"
		c.Events = bt.Produced.Events
		c.Seconds = bt.Seconds
		c.PeakRSSMB = vmHWM("self")
		c.CPUSeconds = bt.Process.CPUSeconds
		c.CPUSecondsPerM = bt.Process.CPUSecondsPerM
		fmt.Fprintf(r.out, "\n[cost] in-process (whole benchmark process, broker and sink included): peak RSS %.0f MB, %.2f CPU s per million events\n",
			c.PeakRSSMB, c.CPUSecondsPerM)
		return c, nil
	}
	ctx, cancel := r.phaseCtx(ctx)
	defer cancel()
	c.Method = "child-process"
	n := r.o.Events
	fmt.Fprintf(r.out, "\n[cost] ampstream as a child process (%s run), batch-heavy mix, trivial sink: producing %d events…\n", r.o.Binary, n)
	p, err := r.c.produce(ctx, "bench-cost", MixBatch, r.o.Seed, n, r.o.Partitions)
	dlq := uniqueName("bench-dlq")
	defer r.c.deleteTopics(context.WithoutCancel(ctx), p.Topic, dlq)
	if err != nil {
		return nil, err
	}
	r.produced(p)
	if err := r.c.createTopic(ctx, dlq, 1); err != nil {
		return nil, err
	}
	s, err := startSink(r.o.CountEvents, false)
	if err != nil {
		return nil, err
	}
	defer func() { _ = s.close() }()
	group := uniqueName("bench-cost")
	cfg := r.appConfig(p.Topic, group, dlq, s.url())
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"run",
		"--kafka.brokers=" + strings.Join(cfg.Kafka.Brokers, ","),
		"--kafka.topics=" + p.Topic,
		"--kafka.group=" + group,
		"--kafka.heartbeat_interval=" + cfg.Kafka.HeartbeatInterval.String(),
		"--kafka.session_timeout=" + cfg.Kafka.SessionTimeout.String(),
		"--kafka.rebalance_timeout=" + cfg.Kafka.RebalanceTimeout.String(),
		"--amplitude.api_key=" + cfg.Amplitude.APIKey.Reveal(),
		"--amplitude.url=" + cfg.Amplitude.URL,
		"--dlq.topic=" + dlq,
		"--admin.addr=" + adminAddr,
		"--shutdown.drain_timeout=" + cfg.Shutdown.DrainTimeout.String(),
		"--log.level=error",
	}
	cmd := exec.Command(r.o.Binary, args...)
	// Only the child's own settings: no AMPSTREAM_* from our environment.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AMPSTREAM_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = io.Discard, r.out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", r.o.Binary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// The child's RSS every 500 ms: whether it climbs with the backlog or
	// spikes tells a leak from a burst.
	samplerDone := make(chan struct{})
	stopSampler := make(chan struct{})
	go func() {
		defer close(samplerDone)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampler:
				return
			case <-t.C:
			}
			c.RSSTimelineMB = append(c.RSSTimelineMB, math.Round(vmRSS(strconv.Itoa(cmd.Process.Pid))))
		}
	}()
	var doneAt time.Time
	waitErr := make(chan error, 1)
	go func() {
		var err error
		doneAt, err = r.c.waitCommitted(ctx, group, p.Topic, p.end)
		waitErr <- err
	}()
	select {
	case err = <-waitErr:
		close(stopSampler)
		<-samplerDone
		c.PeakRSSMB = vmHWM(strconv.Itoa(cmd.Process.Pid))
		c.ChildMetrics = scrapeGoMem(ctx, "http://"+adminAddr+"/metrics")
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if werr := <-exited; err == nil && werr != nil {
			err = fmt.Errorf("ampstream child: %w", werr)
		}
	case werr := <-exited:
		close(stopSampler)
		<-samplerDone
		cancel()
		<-waitErr
		err = fmt.Errorf("ampstream child exited before committing everything: %v", werr)
	}
	if err != nil {
		return c, err
	}
	ps := cmd.ProcessState
	c.Events = n
	c.Seconds = doneAt.Sub(start).Seconds()
	c.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	c.CPUSecondsPerM = c.CPUSeconds / (float64(n) / 1e6)
	// Not rusage's Maxrss: Go starts children with vfork semantics
	// (CLONE_VM), and Linux folds the pre-exec image's high-water mark, this
	// benchmark process's, into the child's ru_maxrss. VmHWM, read before
	// the child exits, is its own.
	fmt.Fprintf(r.out, "  => child: %d events committed %.1fs after start (join included); peak RSS %.0f MB; %.2f CPU s (%.2f s per million events)\n",
		n, c.Seconds, c.PeakRSSMB, c.CPUSeconds, c.CPUSecondsPerM)
	return c, nil
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// scrapeGoMem reads the Go runtime and process gauges from a /metrics page.
func scrapeGoMem(ctx context.Context, url string) map[string]float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer func() { _ = resp.Body.Close() }()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "go_memstats_") && !strings.HasPrefix(name, "process_") && name != "go_goroutines" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) > 0 {
				continue
			}
			switch {
			case m.Gauge != nil:
				out[name] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[name] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// resolvedCounter returns a function that counts the events the app has
// resolved: accepted by the sink or dead-lettered. It gathers only those
// two counters, through a registry of their own: a Gather of the app's
// whole registry every 10 ms took about 1.5 % of the CPU from the run being
// measured, which the baseline's atomic counter does not pay.
func resolvedCounter(m *metrics.Metrics) func() int64 {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.EventsForwarded, m.DLQEvents)
	return func() int64 {
		var v float64
		for k, x := range metrics.Snapshot(reg) {
			if strings.HasPrefix(k, "ampstream_dlq_events_total{") ||
				(strings.HasPrefix(k, "ampstream_events_forwarded_total{") && strings.HasSuffix(k, ",outcome=accepted}")) {
				v += x
			}
		}
		return int64(v)
	}
}
