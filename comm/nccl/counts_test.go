package nccl

import "testing"

// Equal, non-empty blocks take the plain collective; anything else the group of calls.
func TestEqualCounts(t *testing.T) {
	for _, c := range []struct {
		counts []int
		want   bool
	}{
		{[]int{4, 4}, true},
		{[]int{7}, true},
		{[]int{4, 4, 4, 5}, false},
		{[]int{0, 0}, false},
		{[]int{6, 2}, false},
		{nil, false},
	} {
		if got := equalCounts(c.counts); got != c.want {
			t.Errorf("equalCounts(%v) = %v, want %v", c.counts, got, c.want)
		}
	}
}
