package tcp

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"unsafe"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/dtype"
)

// Single-host fast path. When every rank of a ring runs on this host and may read the
// others' memory (process_vm_readv), large collectives skip the sockets: ranks swap the
// addresses of their buffers over the ring, each copies what it needs straight out of its
// peers' memory (one copy instead of a socket's two), and a final ring exchange of status
// bytes keeps every buffer alive until all readers are done. Go's heap does not move, and
// a buffer reached through the Communicator interface lives on the heap.

// DefaultCMAMinBytes is the message size from which the fast path pays for its two ring
// exchanges of latency; below it the ring carries the data itself. Measured on 4 ranks of a
// 2-core machine, the two cross between 1 and 4 MiB.
const DefaultCMAMinBytes = 2 << 20

const probeMagic = 0x2121_6e75_7265_6f6d // "moerun!!"

// setupLocal decides whether this ring may use the fast path: every rank on one host
// (same hostname and boot), and each able to read its successor's probe word.
func (c *Comm) setupLocal(ctx context.Context) error {
	if !cmaSupported || c.size == 1 || c.opt.NoCMA {
		return nil
	}
	allowPeerReads()
	c.probe = new(uint64)
	*c.probe = probeMagic
	mine := make([]byte, 24)
	binary.LittleEndian.PutUint64(mine[0:], hostID())
	binary.LittleEndian.PutUint64(mine[8:], uint64(os.Getpid()))
	binary.LittleEndian.PutUint64(mine[16:], uint64(uintptr(unsafe.Pointer(c.probe))))
	all := make([]byte, 24*c.size)
	if err := c.allGatherBytes(ctx, mine, all); err != nil {
		return fmt.Errorf("exchange host identities: %w", err)
	}
	ok := byte(1)
	pids := make([]int, c.size)
	for q := 0; q < c.size; q++ {
		rec := all[24*q:]
		pids[q] = int(binary.LittleEndian.Uint64(rec[8:]))
		if binary.LittleEndian.Uint64(rec[0:]) != hostID() {
			ok = 0
		}
	}
	if ok == 1 {
		next := (c.rank + 1) % c.size
		word := make([]byte, 8)
		rec := all[24*next:]
		if err := cmaRead(pids[next], uintptr(binary.LittleEndian.Uint64(rec[16:])), word); err != nil || binary.LittleEndian.Uint64(word) != probeMagic {
			c.cfg.Logger.Debug("tcp: peer memory not readable, single-host fast path off", "rank", c.rank, "err", err)
			ok = 0
		}
	}
	flags := make([]byte, c.size)
	if err := c.allGatherBytes(ctx, []byte{ok}, flags); err != nil {
		return fmt.Errorf("agree on the single-host fast path: %w", err)
	}
	for _, f := range flags {
		if f != 1 {
			return nil
		}
	}
	c.pids = pids
	return nil
}

// hostID identifies this machine and boot: ranks in other containers or on other hosts
// differ, and the probe read catches the rest (other PID namespaces).
func hostID() uint64 {
	h := fnv.New64a()
	name, _ := os.Hostname()
	h.Write([]byte(name))
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	h.Write(boot)
	return h.Sum64()
}

func (c *Comm) useLocal(bytes int) bool {
	limit := c.opt.CMAMinBytes
	if limit == 0 {
		limit = DefaultCMAMinBytes
	}
	return c.pids != nil && bytes >= limit
}

// peerBuffers is what the ranks swap before a fast-path collective: the address of each
// rank's send and recv memory.
type peerBuffers struct{ send, recv uintptr }

func (c *Comm) exchange(send, recv []byte) ([]peerBuffers, error) {
	mine := make([]byte, 16)
	binary.LittleEndian.PutUint64(mine[0:], uint64(uintptr(unsafe.Pointer(unsafe.SliceData(send)))))
	binary.LittleEndian.PutUint64(mine[8:], uint64(uintptr(unsafe.Pointer(unsafe.SliceData(recv)))))
	all := make([]byte, 16*c.size)
	bl := blocks(all, repeat(16, c.size), 1)
	copy(bl[c.rank], mine)
	if err := c.ringAllGather(bl); err != nil {
		return nil, err
	}
	out := make([]peerBuffers, c.size)
	for q := range out {
		out[q] = peerBuffers{
			send: uintptr(binary.LittleEndian.Uint64(all[16*q:])),
			recv: uintptr(binary.LittleEndian.Uint64(all[16*q+8:])),
		}
	}
	return out, nil
}

// agree is the closing exchange: every rank reports whether its copies succeeded, and no
// rank leaves (and lets its buffers change) before all have finished reading.
func (c *Comm) agree(err error) error {
	status := byte(1)
	if err != nil {
		status = 0
	}
	all := make([]byte, c.size)
	bl := blocks(all, repeat(1, c.size), 1)
	bl[c.rank][0] = status
	if rerr := c.ringAllGather(bl); rerr != nil {
		return rerr
	}
	if err != nil {
		return err
	}
	for q, s := range all {
		if s != 1 {
			return fmt.Errorf("%w: rank %d failed in this collective", comm.ErrPeerLost, q)
		}
	}
	return nil
}

// others lists the other ranks starting after this one, so that the ranks do not all read
// from the same peer at once.
func (c *Comm) others() []int {
	out := make([]int, 0, c.size-1)
	for i := 1; i < c.size; i++ {
		out = append(out, (c.rank+i)%c.size)
	}
	return out
}

func (c *Comm) localAllGather(send, recv []byte, counts []int, esz int) error {
	peers, err := c.exchange(send, recv)
	if err != nil {
		return err
	}
	bl := blocks(recv, counts, esz)
	for _, q := range c.others() {
		if err = cmaRead(c.pids[q], peers[q].send, bl[q]); err != nil {
			break
		}
	}
	return c.agree(err)
}

// localReduce sums block `off` (len(dst) bytes) of every rank's buffer at the addresses
// that addr picks, into dst. This rank's own contribution is own. bf16 is accumulated in
// float32 and rounded once.
func (c *Comm) localReduce(dt dtype.DType, peers []peerBuffers, addr func(peerBuffers) uintptr, off int, own, dst []byte) error {
	esz := dt.Size()
	seg := c.segmentBuffer()
	step := len(seg) / esz * esz
	if dt == dtype.BFloat16 {
		step = min(step, len(seg)/2) // float32 accumulator of the same element count
	}
	acc := c.accumulator(step / esz)
	for s := 0; s < len(dst); s += step {
		k := min(step, len(dst)-s)
		n := k / esz
		if dt == dtype.Float32 {
			copy(asFloat32(acc[:4*n]), asFloat32(own[s:s+k]))
		} else {
			a, o := asFloat32(acc[:4*n]), asBF16(own[s:s+k])
			for i := range a {
				a[i] = o[i].Float32()
			}
		}
		for _, q := range c.others() {
			if err := cmaRead(c.pids[q], addr(peers[q])+uintptr(off+s), seg[:k]); err != nil {
				return err
			}
			a := asFloat32(acc[:4*n])
			if dt == dtype.Float32 {
				x := asFloat32(seg[:k])
				for i := range a {
					a[i] += x[i]
				}
			} else {
				x := asBF16(seg[:k])
				for i := range a {
					a[i] += x[i].Float32()
				}
			}
		}
		if dt == dtype.Float32 {
			copy(dst[s:s+k], acc[:k])
		} else {
			a, d := asFloat32(acc[:4*n]), asBF16(dst[s:s+k])
			for i := range d {
				d[i] = dtype.FromFloat32(a[i])
			}
		}
	}
	return nil
}

func (c *Comm) accumulator(elems int) []byte {
	if len(c.acc) < 4*elems {
		c.acc = make([]byte, 4*elems)
	}
	return c.acc
}

func (c *Comm) localReduceScatter(dt dtype.DType, send, recv []byte, counts []int) error {
	peers, err := c.exchange(send, recv)
	if err != nil {
		return err
	}
	esz := dt.Size()
	off := offset(counts, c.rank) * esz
	err = c.localReduce(dt, peers, func(p peerBuffers) uintptr { return p.send }, off, send[off:off+len(recv)], recv)
	return c.agree(err)
}

// localAllReduce reduces this rank's block from every peer's send buffer, waits for all,
// then gathers the other blocks from the peers' recv buffers.
func (c *Comm) localAllReduce(dt dtype.DType, send, recv []byte) error {
	peers, err := c.exchange(send, recv)
	if err != nil {
		return err
	}
	esz := dt.Size()
	counts := evenCounts(len(recv)/esz, c.size)
	mine := blocks(recv, counts, esz)
	off := offset(counts, c.rank) * esz
	err = c.localReduce(dt, peers, func(p peerBuffers) uintptr { return p.send }, off, send[off:off+len(mine[c.rank])], mine[c.rank])
	if err = c.agree(err); err != nil {
		return err
	}
	for _, q := range c.others() {
		qoff := offset(counts, q) * esz
		if err = cmaRead(c.pids[q], peers[q].recv+uintptr(qoff), mine[q]); err != nil {
			break
		}
	}
	return c.agree(err)
}

func (c *Comm) localBroadcast(buf []byte, root int) error {
	peers, err := c.exchange(buf, buf)
	if err != nil {
		return err
	}
	if c.rank != root {
		err = cmaRead(c.pids[root], peers[root].send, buf)
	}
	return c.agree(err)
}

func offset(counts []int, r int) int {
	off := 0
	for _, n := range counts[:r] {
		off += n
	}
	return off
}
