package grouplag

import (
	"context"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// ageMaxWait: the partitions read have records past the position, so the
// broker answers at once; the wait only matters if they vanished meanwhile.
const ageMaxWait = 100 * time.Millisecond

// readAges reads, for the partitions of reads that lag and whose position
// moved since the last read, the timestamp of the record at the position,
// and stores it in e.ages. It stops starting reads when the budget is spent;
// the partitions left over are read first next time (the cursor rotates).
func (e *Exporter) readAges(ctx context.Context, reads []read) {
	var todo []read
	for _, r := range reads {
		if r.lag == 0 {
			delete(e.ages, r.tp)
			continue
		}
		if a, ok := e.ages[r.tp]; ok && a.position == r.position {
			continue
		}
		todo = append(todo, r)
	}
	if len(todo) == 0 {
		return
	}
	start := e.cursor % len(todo)
	todo = append(todo[start:], todo[:start]...)

	ctx, cancel := context.WithTimeout(ctx, e.opts.AgeBudget)
	defer cancel()
	type result struct {
		r  read
		ts time.Time
		ok bool
	}
	results := make([]result, len(todo))
	sem := make(chan struct{}, e.opts.AgeConcurrency)
	var wg sync.WaitGroup
	started := 0
loop:
	for i, r := range todo {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		started++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ts, ok := e.readAge(ctx, r)
			results[i] = result{r, ts, ok}
		}()
	}
	wg.Wait()
	e.cursor = start + started
	for _, res := range results[:started] {
		if res.ok {
			e.ages[res.r.tp] = age{position: res.r.position, ts: res.ts}
		}
	}
}

// readAge fetches from the position and returns the timestamp of the first
// record at or after it. A batch may start before the position (the broker
// returns whole batches), and transaction markers are skipped by the reader;
// when the answer holds no record at or after the position, it reports !ok.
func (e *Exporter) readAge(ctx context.Context, r read) (time.Time, bool) {
	iso := kafka.ReadUncommitted
	if e.opts.ReadCommitted {
		iso = kafka.ReadCommitted
	}
	resp, err := e.opts.Client.Fetch(ctx, &kafka.FetchRequest{
		Topic: r.topic, Partition: r.partition, Offset: r.position,
		MinBytes: 1, MaxBytes: int64(e.opts.AgeMaxBytes), MaxWait: ageMaxWait,
		IsolationLevel: iso,
	})
	if err != nil || resp.Error != nil {
		return time.Time{}, false
	}
	for {
		rec, err := resp.Records.ReadRecord()
		if err != nil { // io.EOF: nothing at or after the position in this answer
			return time.Time{}, false
		}
		if rec.Key != nil {
			rec.Key.Close()
		}
		if rec.Value != nil {
			rec.Value.Close()
		}
		if rec.Offset >= r.position {
			return rec.Time, true
		}
	}
}
