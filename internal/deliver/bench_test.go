package deliver

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ampstream/ampstream/internal/amplitude"
	"github.com/ampstream/ampstream/internal/event"
	"github.com/ampstream/ampstream/internal/metrics"
	"github.com/ampstream/ampstream/internal/route"
)

// instantSender accepts every request at once.
type instantSender struct{}

func (instantSender) Send(context.Context, amplitude.Route, []amplitude.Event) amplitude.Result {
	return amplitude.Result{Class: amplitude.Accepted, Status: 200, Code: "200"}
}

func (instantSender) BodySize(n, sum int) int { return 40 + sum + n }

// countingOwner closes done when target items are resolved.
type countingOwner struct {
	n, rejected atomic.Int64
	target      int64
	done        chan struct{}
}

func (o *countingOwner) Accepted(items []*Item) {
	n := int64(len(items))
	if after := o.n.Add(n); after >= o.target && after-n < o.target {
		close(o.done)
	}
}

func (o *countingOwner) Rejected(*Item, string, string) {
	o.rejected.Add(1)
	o.Accepted(make([]*Item, 1))
}

func (o *countingOwner) Revoked() bool { return false }

func (o *countingOwner) AppendInsertIDHead(dst []byte, it *Item) []byte {
	return event.AppendInsertIDHead(dst, []byte("bench-"), int64(it.Seq))
}

// BenchmarkDeliverThroughput pushes events through Submit → shard → request
// → sender → Accepted with an Amplitude that answers instantly: the
// deliverer's own cost per event (4 shards, 4 producers owning 10k keys).
// allocs/op is allocations per event.
func BenchmarkDeliverThroughput(b *testing.B) {
	for _, lane := range []route.Lane{route.Realtime, route.Batch} {
		b.Run(lane.String(), func(b *testing.B) {
			const producers, nkeys = 4, 10_000
			raw := []byte(`{"device_id":"0f8fad5b-d9cb-469f-a165-70867728950e","user_id":"user-12345","event_type":"page_view","time":1800000000000,"insert_id":"9f1c0c3e-5b7a-4a8e-9d2a-3c1e6f0b7a21","event_properties":{"path":"/home","referrer":"https://example.com/"}}`)
			keys := make([][]byte, nkeys)
			for i := range keys {
				keys[i] = fmt.Appendf(nil, "device-%08d", i)
			}
			own := &countingOwner{target: int64(b.N), done: make(chan struct{})}
			// Each producer owns the keys that hash to it, as a partition does.
			seed := maphash.MakeSeed()
			work := make([][]*Item, producers)
			for i := range b.N {
				k := keys[i%nkeys]
				p := maphash.Bytes(seed, k) % producers
				work[p] = append(work[p], &Item{Raw: raw, Key: k, DeviceID: k, Override: lane, Owner: own})
			}

			tr := route.NewTracker(route.TrackerOptions{HotEPS: 30, CoolEPS: 20, CoolHold: 10 * time.Second})
			d := New(Options{
				Shards:   4,
				Realtime: LaneOptions{Linger: 5 * time.Millisecond},
				Batch:    LaneOptions{Linger: 20 * time.Millisecond},
			}, instantSender{}, route.NewPolicy(tr, route.PolicyOptions{}), tr, metrics.New(prometheus.NewRegistry()), zerolog.Nop())
			d.Start()
			defer d.Stop()

			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for _, items := range work {
				wg.Go(func() {
					for _, it := range items {
						if err := d.Submit(context.Background(), it); err != nil {
							panic(err)
						}
					}
				})
			}
			wg.Wait()
			<-own.done
			b.StopTimer()
			if n := own.rejected.Load(); n > 0 {
				b.Fatalf("%d events rejected", n)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
