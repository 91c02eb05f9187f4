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
}

func costBetween(a, b usage, events int) ProcessCost {
	c := ProcessCost{CPUSeconds: (b.cpu - a.cpu).Seconds(), GCCycles: b.gcs - a.gcs, MinorFaults: b.minflt - a.minflt}
	if events > 0 {
		c.CPUSecondsPerM = c.CPUSeconds / (float64(events) / 1e6)
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
