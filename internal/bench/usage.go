package bench

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// usage is a snapshot of this process's resource counters.
type usage struct {
	at      time.Time
	cpu     time.Duration // user + system
	mallocs uint64
	alloc   uint64 // bytes allocated, cumulative
	gcs     uint32
	minflt  int64 // minor page faults, cumulative

	// The broker child's counters (zero without one).
	brokerCPU    time.Duration
	brokerMinflt int64
}

func takeUsage() usage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{
		at:      time.Now(),
		cpu:     time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		mallocs: ms.Mallocs,
		alloc:   ms.TotalAlloc,
		gcs:     ms.NumGC,
		minflt:  int64(ru.Minflt), // int32 on 32-bit platforms
	}
}

// ProcessCost is what the whole benchmark process spent during a run: the
// forwarder under test and also the in-process broker, the sink and (for
// the emulator runs) the emulator, which share its CPU and heap.
type ProcessCost struct {
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUSecondsPerM  float64 `json:"cpu_s_per_million_events"`
	MallocsPerEvent float64 `json:"mallocs_per_event"`
	// AllocBytesPerEvent is the heap bytes allocated per event, the broker's
	// included: a figure the machine's load does not move, unlike CPU time.
	AllocBytesPerEvent float64 `json:"alloc_bytes_per_event"`
	GCCycles           uint32  `json:"gc_cycles"`
	// MinorFaults counts the pages the process touched for the first time
	// (or again after the Go runtime returned them to the kernel): kernel
	// work on top of the CPU the forwarder's own code takes.
	MinorFaults int64 `json:"minor_faults"`

	// What the broker child process (--broker-process: kfake in a process
	// of its own) spent during the run; absent against KAFKA_BROKERS or an
	// in-process broker.
	BrokerCPUSeconds     float64 `json:"broker_cpu_seconds,omitempty"`
	BrokerCPUSecondsPerM float64 `json:"broker_cpu_s_per_million_events,omitempty"`
	BrokerMinorFaults    int64   `json:"broker_minor_faults,omitempty"`
}

func costBetween(a, b usage, events int) ProcessCost {
	c := ProcessCost{
		CPUSeconds: (b.cpu - a.cpu).Seconds(), GCCycles: b.gcs - a.gcs, MinorFaults: b.minflt - a.minflt,
		BrokerCPUSeconds: (b.brokerCPU - a.brokerCPU).Seconds(), BrokerMinorFaults: b.brokerMinflt - a.brokerMinflt,
	}
	if events > 0 {
		c.CPUSecondsPerM = c.CPUSeconds / (float64(events) / 1e6)
		c.BrokerCPUSecondsPerM = c.BrokerCPUSeconds / (float64(events) / 1e6)
		c.MallocsPerEvent = float64(b.mallocs-a.mallocs) / float64(events)
		c.AllocBytesPerEvent = float64(b.alloc-a.alloc) / float64(events)
	}
	return c
}

// vmHWM reads a process's peak RSS from /proc/<pid>/status, in MB; 0 when
// unavailable.
func vmHWM(pid string) float64 { return procStatusMB(pid, "VmHWM:") }

// vmRSS reads a process's current RSS, in MB.
func vmRSS(pid string) float64 { return procStatusMB(pid, "VmRSS:") }

func procStatusMB(pid, field string) float64 {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procStat reads a process's user + system CPU time and minor page faults
// from /proc/<pid>/stat; ok is false when unavailable.
func procStat(pid string) (cpu time.Duration, minflt int64, ok bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields that follow start after its last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): minflt is field 10, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, false
	}
	minflt, err1 := strconv.ParseInt(f[7], 10, 64)
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, false
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, minflt, true
}

// loadAvg is the 1-minute load average; 0 when unavailable.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	v, _ := strconv.ParseFloat(f, 64)
	return v
}

// cpuPressure is the share of the last 10 s in which some runnable task
// waited for a CPU (/proc/pressure/cpu "some avg10", percent); -1 when the
// kernel does not report it.
func cpuPressure() float64 {
	b, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "avg10="); ok {
			p, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return p
			}
		}
	}
	return -1
}
