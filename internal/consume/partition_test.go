package consume

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestMessageFitsItsSizeClass: the event path allocates one message per
// event, and 256 bytes is a size class of the allocator; a field added to
// message or deliver.Item moves every event to the 288-byte class.
func TestMessageFitsItsSizeClass(t *testing.T) {
	require.LessOrEqual(t, unsafe.Sizeof(message{}), uintptr(256))
}
