package tcp

import (
	"testing"

	"github.com/moerun/moerun/comm/commtest"
)

// Both transports pass the conformance suite: in one process every rank shares the host,
// and the cross-memory fast path takes every message of 4 KiB and more; NoCMA keeps
// everything on the ring.
func TestConformance(t *testing.T) {
	t.Run("cma", func(t *testing.T) { commtest.Conformance(t, Options{CMAMinBytes: 4 << 10}.Open) })
	t.Run("ring", func(t *testing.T) { commtest.Conformance(t, Options{NoCMA: true}.Open) })
}
