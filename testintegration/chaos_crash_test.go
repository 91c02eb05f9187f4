package testintegration

import (
	"fmt"
	"testing"
	"time"

	"github.com/ampstream/ampstream/internal/traffic"
)

// TestChaosKill9MidStreamThenRestart SIGKILLs the real binary while traffic
// flows: no drain, no final commit, no LeaveGroup. A new process in the same
// group takes over once the broker expires the dead member (session timeout
// 6 s) and redelivers from the last commit; Amplitude's insert_id dedup
// absorbs the redeliveries, so nothing is lost or doubled after dedup.
func TestChaosKill9MidStreamThenRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary and waits out a group session timeout")
	}
	t.Parallel()
	bin := buildAmpstream(t)
	h := newHarness(t, 6, nil)
	g := traffic.New(11, 400, 0.3, nil)
	p := startProducer(h, g, 1000)

	c1 := h.startChild(bin)
	eventually(t, 60*time.Second, "the first process to deliver 3000 events", func() bool {
		return h.emu.Stats().Ingested >= 3000
	})
	rss1 := c1.rssKB()
	c1.kill9()
	killed := time.Now()
	// Taken after the process is gone: a commit or request the dead process
	// had in flight may still land, so the baselines come after the kill.
	before := h.committedSnapshot()
	atKill := h.emu.Stats()

	c2 := h.startChild(bin)
	eventually(t, 60*time.Second, "the new process to deliver", func() bool {
		return scrapeMetrics(c2.admin, "ampstream_events_forwarded_total")["ampstream_events_forwarded_total"] > 0
	})
	firstAccept := time.Since(killed)
	eventually(t, 60*time.Second, "every partition's commit to advance past its value at the kill", func() bool {
		return allAdvanced(before, h.committedSnapshot())
	})
	recovered := time.Since(killed)
	// Keep traffic flowing a little under the new process, then finish.
	v0, _, _ := p.counts()
	eventually(t, 30*time.Second, "2000 more events produced after recovery", func() bool {
		v, _, _ := p.counts()
		return v >= v0+2000
	})
	valid, invalid := p.stop()
	rep := h.chaosFinish(g.Expected(), valid, 90*time.Second)
	if !c2.alive() {
		t.Fatalf("the restarted process exited: %v", c2.err)
	}
	rss2 := c2.rssKB()
	c2.term()
	s := h.emu.Stats()
	t.Logf("kill -9 after %d accepted events; %d events accepted again (Amplitude dedup)", atKill.Accepted, s.Duplicates)
	h.chaosLine("kill9", rep, invalid,
		"first_accept_after_kill_s="+secs(firstAccept), "recover_s="+secs(recovered),
		fmt.Sprintf("rss_kb_before=%d rss_kb_after=%d reader_io_timeouts=%d", rss1, rss2, c1.logCount("i/o timeout")+c2.logCount("i/o timeout")))
}

// TestChaosMembersJoinAndLeaveUnderLoad runs three replicas of the service
// in one group on a 6-partition topic and, while traffic flows, stops one
// (the SIGTERM path: drain, final commit, leave), starts another, stops a
// second, starts a fifth: six rebalances with live traffic. Graceful moves
// should redeliver little or nothing.
func TestChaosMembersJoinAndLeaveUnderLoad(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 6, nil)
	g := traffic.New(12, 400, 0.3, nil)
	p := startProducer(h, g, 600)
	cfg := h.config()

	live := []*running{h.start(cfg), h.start(cfg), h.start(cfg)}
	progress := func(what string, n int64) {
		t.Helper()
		from := h.emu.Stats().Ingested
		eventually(t, 60*time.Second, what, func() bool { return h.emu.Stats().Ingested >= from+n })
	}
	progress("three replicas delivering", 1500)
	var stops []time.Duration
	stop := func(i int) {
		t.Helper()
		r := live[i]
		live = append(live[:i], live[i+1:]...)
		t0 := time.Now()
		r.Stop(t)
		stops = append(stops, time.Since(t0))
	}
	stop(1)
	progress("delivery after a member left", 1000)
	live = append(live, h.start(cfg))
	progress("delivery after a member joined", 1000)
	stop(0)
	progress("delivery after a second member left", 1000)
	live = append(live, h.start(cfg))
	progress("delivery after a second member joined", 1000)
	stop(0)
	progress("delivery after a third member left", 1000)

	valid, invalid := p.stop()
	rep := h.chaosFinish(g.Expected(), valid, 90*time.Second)
	for len(live) > 0 {
		stop(0)
	}
	var longest time.Duration
	for _, d := range stops {
		longest = max(longest, d)
	}
	h.chaosLine("members", rep, invalid, fmt.Sprintf("members_started=%d stops=%d", 5, len(stops)), "longest_stop_s="+secs(longest))
}

// TestChaosKill9OneOfThreeReplicas SIGKILLs one of three running processes
// and starts no replacement: the two survivors keep their partitions,
// take over the dead one's once the broker expires it (session timeout
// 6 s), and finish the stream between them.
func TestChaosKill9OneOfThreeReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary and waits out a group session timeout")
	}
	t.Parallel()
	bin := buildAmpstream(t)
	h := newHarness(t, 6, nil)
	g := traffic.New(13, 400, 0.3, nil)
	p := startProducer(h, g, 1000)
	cs := []*child{h.startChild(bin), h.startChild(bin), h.startChild(bin)}
	eventually(t, 60*time.Second, "three processes to deliver 3000 events", func() bool {
		return h.emu.Stats().Ingested >= 3000
	})
	cs[1].kill9()
	killed := time.Now()
	before := h.committedSnapshot()
	eventually(t, 60*time.Second, "every partition's commit to advance past its value at the kill", func() bool {
		return allAdvanced(before, h.committedSnapshot())
	})
	recovered := time.Since(killed)
	v0, _, _ := p.counts()
	eventually(t, 30*time.Second, "2000 more events produced after recovery", func() bool {
		v, _, _ := p.counts()
		return v >= v0+2000
	})
	valid, invalid := p.stop()
	rep := h.chaosFinish(g.Expected(), valid, 90*time.Second)
	for _, c := range []*child{cs[0], cs[2]} {
		if !c.alive() {
			t.Fatalf("a surviving process exited: %v", c.err)
		}
		c.term()
	}
	h.chaosLine("kill9_one_of_three", rep, invalid, "recover_s="+secs(recovered))
}
