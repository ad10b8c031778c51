package tcp

import (
	"testing"

	"github.com/moerun/moerun/comm/commtest"
)

// Both transports pass the conformance suite: in one process every rank shares the host,
// so the default takes the cross-memory fast path for messages of 64 KiB and more, and
// NoCMA keeps everything on the ring.
func TestConformance(t *testing.T) {
	t.Run("cma", func(t *testing.T) { commtest.Conformance(t, Options{}.Open) })
	t.Run("ring", func(t *testing.T) { commtest.Conformance(t, Options{NoCMA: true}.Open) })
}
