package event

import (
	"errors"
	"fmt"
	"testing"
)

func TestReasonOfNamesTheInvalidReasonAndMalformedJSONOtherwise(t *testing.T) {
	inv := &Invalid{Reason: ReasonMissingID}
	for _, c := range []struct {
		err  error
		want Reason
	}{
		{inv, ReasonMissingID},
		{fmt.Errorf("wrapped: %w", inv), ReasonMissingID},
		{errors.New("anything else"), ReasonMalformedJSON},
	} {
		if got := ReasonOf(c.err); got != c.want {
			t.Errorf("ReasonOf(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}
