package bench

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// benthosConfig is the peer pipeline (benthos-peer.yaml): the topic to the
// trivial sink in JSON-array batches of 100, committing once a second.
//
//go:embed benthos-peer.yaml
var benthosConfig []byte

// PeerRun is a generic forwarder run as a child process over the
// baseline's topic into the trivial sink.
type PeerRun struct {
	Name   string `json:"name"`
	Binary string `json:"binary"`
	Events int    `json:"events"`
	// Seconds: the sink's first request → the group committed every end
	// offset. The peer's own accounting is not visible from outside, so
	// its clock stops at the commit (once a second), where ampstream's
	// stops at the last resolved event: up to a second more for the peer.
	Seconds        float64   `json:"seconds"`
	EPS            float64   `json:"eps"`
	CPUSeconds     float64   `json:"cpu_seconds"`
	CPUSecondsPerM float64   `json:"cpu_seconds_per_million"`
	PeakRSSMB      float64   `json:"peak_rss_mb"`
	SinkStats      SinkStats `json:"sink_stats"`
}

// benthos runs the Benthos binary o.Benthos over p, the baseline's topic,
// with a group of its own, and measures it as cost measures ampstream's
// child: wall time to the commit of every offset, CPU from the child's
// rusage, peak RSS from /proc.
func (r *runner) benthos(ctx context.Context, p Produced) (*PeerRun, error) {
	ctx, cancel := r.phaseCtx(ctx)
	defer cancel()
	fmt.Fprintf(r.out, "\n[benthos] %s over the baseline's topic (%d events), trivial sink\n", r.o.Benthos, p.Events)
	dir, err := os.MkdirTemp("", "ampstream-bench-benthos")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	cfgPath := filepath.Join(dir, "benthos-peer.yaml")
	if err := os.WriteFile(cfgPath, benthosConfig, 0o600); err != nil {
		return nil, err
	}
	s, err := startSink(false, false)
	if err != nil {
		return nil, err
	}
	defer func() { _ = s.close() }()
	group := uniqueName("bench-benthos")
	cmd := exec.Command(r.o.Benthos, "-c", cfgPath)
	cmd.Env = append(os.Environ(),
		"KAFKA_BROKERS="+strings.Join(r.c.brokers, ","),
		"TOPIC="+p.Topic, "GROUP="+group, "SINK_URL="+s.url()+"/batch")
	cmd.Stdout, cmd.Stderr = io.Discard, r.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", r.o.Benthos, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pr := &PeerRun{Name: "benthos", Binary: r.o.Benthos, Events: p.Events}
	waitErr := make(chan error, 1)
	var doneAt time.Time
	go func() {
		var err error
		doneAt, err = r.c.waitCommitted(ctx, group, p.Topic, p.end)
		waitErr <- err
	}()
	select {
	case err = <-waitErr:
		pr.PeakRSSMB = vmHWM(strconv.Itoa(cmd.Process.Pid))
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited // Benthos exits 0 or by the signal; only its commits count
	case werr := <-exited:
		cancel()
		<-waitErr
		err = fmt.Errorf("benthos exited before committing everything: %v", werr)
	}
	if err != nil {
		return nil, err
	}
	first := s.firstRequest()
	if first.IsZero() {
		return nil, fmt.Errorf("benthos committed but the sink saw no request")
	}
	ps := cmd.ProcessState
	pr.Seconds = doneAt.Sub(first).Seconds()
	pr.EPS = float64(p.Events) / pr.Seconds
	pr.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	pr.CPUSecondsPerM = pr.CPUSeconds / (float64(p.Events) / 1e6)
	pr.SinkStats = s.stats()
	fmt.Fprintf(r.out, "  => benthos: %.0f events/s over %.2fs (first request → all committed); %.2f CPU s (%.2f s per million events); peak RSS %.0f MB; %d requests\n",
		pr.EPS, pr.Seconds, pr.CPUSeconds, pr.CPUSecondsPerM, pr.PeakRSSMB, pr.SinkStats.Requests)
	return pr, nil
}
