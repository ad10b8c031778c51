// Package rank owns the rank grid of a job: its layout (ExtDP × DP × PP × PCP × TP, TP
// innermost), the coordinates of a rank, the process groups of every kind, the MoE parallel
// config derived from them, expert placement, and the per-DP token bookkeeping (sequence-parallel
// sizes and DP chunking). Everything here is a pure function from values to values. It must not
// do I/O, read clocks or the environment, or import anything outside the standard library, so a
// plan can be printed, diffed and tested with no process running (moe-semantics.md §3.3, §4, §6).
//
// Methods that take a rank or a coordinate assume a valid layout (l.Validate() == nil) and an
// in-range argument; l.CheckRank validates untrusted input first. Outside that contract they
// never panic: they return sentinel values (Coord with every field -1, Rank -1, Groups nil,
// GroupOf (-1, -1), a zero MoEParallel). Functions with an error return report bad input as an
// error that matches ErrInvalid under errors.Is.
package rank
