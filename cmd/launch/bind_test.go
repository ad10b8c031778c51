package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/moerun/moerun/topology"
)

// ownCPUs is this process's Cpus_allowed_list, as the kernel writes it.
func ownCPUs() (string, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no Cpus_allowed_list in /proc/self/status")
}

var (
	reportLine = regexp.MustCompile(`(?m)^launch: rank (\d+) → host [^,]+, GPU [^,]+, NUMA node [^,]+, CPUs (.+)$`)
	cpusLine   = regexp.MustCompile(`(?m)^\[(\d+)\] cpus (.+)$`)
)

// cmdAffinity: affinity [-disjoint] — the last launch ran with --report-bindings and
// fakeworker's cpus step: every rank's own CPUs (stdout) are those the report gave it on
// stderr, or the launcher's (this process's) where it said "not bound". -disjoint: no CPU
// is bound to two ranks, unless the launcher has fewer CPUs than there are ranks.
func cmdAffinity(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) > 1 || len(args) == 1 && args[0] != "-disjoint" {
		ts.Fatalf("usage: affinity [-disjoint]")
	}
	parse := func(s string) []int {
		c, err := topology.CPUList(s).CPUs()
		ts.Check(err)
		return c
	}
	own, err := ownCPUs()
	ts.Check(err)
	reported := map[int][]int{}
	for _, m := range reportLine.FindAllStringSubmatch(ts.ReadFile("stderr"), -1) {
		r, _ := strconv.Atoi(m[1])
		if m[2] == "not bound" {
			m[2] = own
		}
		reported[r] = parse(m[2])
	}
	got := map[int][]int{}
	for _, m := range cpusLine.FindAllStringSubmatch(ts.ReadFile("stdout"), -1) {
		r, _ := strconv.Atoi(m[1])
		got[r] = parse(m[2])
	}
	if len(reported) == 0 || len(got) != len(reported) {
		ts.Fatalf("%d ranks reported, %d printed their CPUs", len(reported), len(got))
	}
	owner := map[int]int{}
	for r, want := range reported {
		if !slices.Equal(got[r], want) {
			ts.Fatalf("rank %d runs on CPUs %s, reported %s", r, topology.FormatCPUs(got[r]), topology.FormatCPUs(want))
		}
		if len(args) == 1 && len(parse(own)) >= len(reported) {
			for _, c := range want {
				if q, ok := owner[c]; ok {
					ts.Fatalf("CPU %d is bound to ranks %d and %d", c, q, r)
				}
				owner[c] = r
			}
		}
	}
}
