package topology

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// CPUList is a set of CPUs in the kernel's list format (sysfs cpulist, taskset -c,
// numactl): "0-55,112-167". It is kept as written; CPUs parses it. The empty list means
// "not known".
type CPUList string

// maxCPU bounds CPU numbers, so that a typo cannot make a list of a billion CPUs.
const maxCPU = 1 << 16

// CPUs returns the CPUs of the list, ascending and without duplicates.
func (l CPUList) CPUs() ([]int, error) {
	s := strings.TrimSpace(string(l))
	if s == "" {
		return nil, nil
	}
	var cpus []int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseCPU(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parseCPU(hi); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("range %q runs backwards", part)
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return slices.Compact(cpus), nil
}

func parseCPU(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || s[0] == '+' {
		return 0, fmt.Errorf("bad CPU number %q", s)
	}
	if n >= maxCPU {
		return 0, fmt.Errorf("CPU %d is beyond %d", n, maxCPU-1)
	}
	return n, nil
}

// FormatCPUs writes CPUs in the list format, with ranges: [0 1 2 3 8] → "0-3,8".
func FormatCPUs(cpus []int) CPUList {
	c := slices.Clone(cpus)
	slices.Sort(c)
	c = slices.Compact(c)
	var b strings.Builder
	for i := 0; i < len(c); {
		j := i
		for j+1 < len(c) && c[j+1] == c[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(c[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(c[j]))
		}
		i = j + 1
	}
	return CPUList(b.String())
}
