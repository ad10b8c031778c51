package commbench

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseBytes reads a size such as 8, 64K, 16M or 1G (powers of 1024, as nccl-tests).
func ParseBytes(s string) (int64, error) {
	mult := int64(1)
	t := strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B")
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 1 || v > (1<<40)/mult {
		return 0, fmt.Errorf("%q: expected a positive size such as 8, 64K, 16M or 1G", s)
	}
	return v * mult, nil
}
