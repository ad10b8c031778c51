package tcp

import (
	"testing"

	"github.com/moerun/moerun/comm/commtest"
)

func TestConformance(t *testing.T) { commtest.Conformance(t, Open) }
