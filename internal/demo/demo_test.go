package demo

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The demo is the newcomer's first contact: it must pass on a bare machine.
func TestDemoDeliversEverythingExactlyOnceInOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline for several seconds")
	}
	var out bytes.Buffer
	sum, err := Run(context.Background(), Options{
		Duration: 4 * time.Second, Rate: 1000, Devices: 500, Bursters: 2, BurstSize: 600, Backfill: 500,
		Partitions: 4, Out: &out, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if sum.HTTP429 != 0 {
		t.Errorf("got %d HTTP 429 answers, want none: hot keys must move to Batch first", sum.HTTP429)
	}
}
