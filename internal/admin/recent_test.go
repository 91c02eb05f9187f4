package admin

import (
	"io"
	"testing"

	"github.com/rs/zerolog"
)

func TestRecentErrorsKeepsTheNewestWarningsAndFoldsRepeats(t *testing.T) {
	t.Parallel()
	r := NewRecentErrors(3)
	log := zerolog.New(io.Discard).Hook(r)
	log.Info().Msg("not kept: below warn")
	log.Warn().Msg("a")
	for i := 0; i < 5; i++ {
		log.Warn().Msg("burst")
	}
	log.Error().Msg("b")
	log.Warn().Msg("c")
	got := r.Entries()
	want := []struct {
		msg   string
		count int
	}{{"c", 1}, {"b", 1}, {"burst", 5}}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Message != w.msg || got[i].Count != w.count {
			t.Errorf("entry %d = %q ×%d, want %q ×%d", i, got[i].Message, got[i].Count, w.msg, w.count)
		}
	}
}
