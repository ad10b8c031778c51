package tcp

import (
	"context"
	"io"
	"time"
	"unsafe"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/dtype"
)

// Ring algorithms. With n ranks, all-gather and reduce-scatter move (n-1)/n of the data
// over every link, which is optimal for a ring; all-reduce is reduce-scatter then
// all-gather (2(n-1)/n), and broadcast is a pipelined chain that starts at the root. Every
// rank sends to its successor while it receives from its predecessor, so each link is busy
// in both directions throughout.

// segment is the unit in which reductions consume incoming data and broadcast relays it:
// small enough to overlap the arithmetic (or the forwarding) with the transfer, large
// enough that per-call overheads vanish.
const segment = 512 << 10

// pipeline runs one collective's transfers: a goroutine writes sendOf(0), sendOf(1), …
// to the successor, and the caller's goroutine runs recvStep(0), recvStep(1), … from the
// predecessor. sendOf(s) is written only after `s+lag` receive steps have completed, which
// is the data dependence of the algorithms (lag 0: step s forwards what step s-1 received;
// lag 1: a relay forwards the segment it just received). A nil or empty send is skipped.
func (c *Comm) pipeline(sends int, sendOf func(s int) []byte, lag int, recvs int, recvStep func(s int) error) error {
	done := make(chan struct{}, recvs+1) // one token per completed receive step
	quit := make(chan struct{})
	sendErr := make(chan error, 1)
	go func() {
		received := 0
		for s := 0; s < sends; s++ {
			for received < s+lag && received < recvs {
				select {
				case <-done:
					received++
				case <-quit:
					sendErr <- nil
					return
				}
			}
			if b := sendOf(s); len(b) > 0 {
				if _, err := c.next.Write(b); err != nil {
					c.prev.SetReadDeadline(time.Unix(1, 0)) // the receiver would wait for nothing
					sendErr <- err
					return
				}
			}
		}
		sendErr <- nil
	}()
	for s := 0; s < recvs; s++ {
		if err := recvStep(s); err != nil {
			// Stop the sender: it may wait for this step, or be stuck writing to a dead peer.
			close(quit)
			c.next.SetWriteDeadline(time.Unix(1, 0))
			<-sendErr
			return err
		}
		done <- struct{}{}
	}
	return <-sendErr
}

func (c *Comm) readFull(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, err := io.ReadFull(c.prev, b)
	return err
}

// ringAllGather fills blocks (rank i's part is blocks[i]); this rank's own block must
// already hold its data.
func (c *Comm) ringAllGather(blocks [][]byte) error {
	n, r := c.size, c.rank
	return c.pipeline(n-1, func(s int) []byte { return blocks[mod(r-s, n)] },
		0, n-1, func(s int) error { return c.readFull(blocks[mod(r-s-1, n)]) })
}

// ringReduceScatter sums block i of in over all ranks into out on rank i. work provides one
// scratch block per rank for the partial sums that travel around the ring.
func (c *Comm) ringReduceScatter(dt dtype.DType, in, work [][]byte, out []byte) error {
	n, r := c.size, c.rank
	esz := dt.Size()
	seg := c.segmentBuffer()
	sendOf := func(s int) []byte {
		j := mod(r-s-1, n)
		if s == 0 {
			return in[j] // the first hop carries this rank's own contribution
		}
		return work[j]
	}
	recvStep := func(s int) error {
		j := mod(r-s-2, n)
		dst := work[j]
		if s == n-2 {
			dst = out // the last hop completes this rank's own block
		}
		for off := 0; off < len(dst); {
			k := min(len(seg)/esz*esz, len(dst)-off)
			if err := c.readFull(seg[:k]); err != nil {
				return err
			}
			sumInto(dt, dst[off:off+k], seg[:k], in[j][off:off+k])
			off += k
		}
		return nil
	}
	return c.pipeline(n-1, sendOf, 0, n-1, recvStep)
}

func (c *Comm) segmentBuffer() []byte {
	if c.seg == nil {
		c.seg = make([]byte, segment)
	}
	return c.seg
}

func (c *Comm) scratchBytes(n int) []byte {
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	return c.scratch[:n]
}

func mod(a, n int) int { return ((a % n) + n) % n }

// blocks cuts b (elements of size esz) into consecutive runs of counts[i] elements.
func blocks(b []byte, counts []int, esz int) [][]byte {
	out := make([][]byte, len(counts))
	off := 0
	for i, n := range counts {
		out[i] = b[off*esz : (off+n)*esz : (off+n)*esz]
		off += n
	}
	return out
}

// evenCounts splits total elements into n near-equal parts (the first total%n get one more).
func evenCounts(total, n int) []int {
	counts := make([]int, n)
	for i := range counts {
		counts[i] = total / n
		if i < total%n {
			counts[i]++
		}
	}
	return counts
}

func repeat(v, n int) []int {
	counts := make([]int, n)
	for i := range counts {
		counts[i] = v
	}
	return counts
}

func sameMemory(a, b []byte) bool {
	return len(a) > 0 && len(b) > 0 && unsafe.SliceData(a) == unsafe.SliceData(b)
}

// run brackets a collective with its deadline and the broken-ring bookkeeping.
func (c *Comm) run(ctx context.Context, bufs []comm.Buffer, body func() error) error {
	for _, b := range bufs {
		if b.OnDevice() {
			return errDevice
		}
	}
	release, err := c.begin(ctx)
	if err != nil {
		return err
	}
	err = body()
	release()
	return c.end(ctx, err)
}

func (c *Comm) AllGather(ctx context.Context, send, recv comm.Buffer) error {
	return c.AllGatherV(ctx, send, recv, repeat(send.Len(), c.size))
}

func (c *Comm) AllGatherV(ctx context.Context, send, recv comm.Buffer, counts []int) error {
	return c.run(ctx, []comm.Buffer{send, recv}, func() error {
		bl := blocks(recv.Host(), counts, recv.DType().Size())
		if !sameMemory(bl[c.rank], send.Host()) {
			copy(bl[c.rank], send.Host())
		}
		if c.size == 1 {
			return nil
		}
		if c.useLocal(recv.Bytes()) {
			return c.localAllGather(send.Host(), recv.Host(), counts, recv.DType().Size())
		}
		return c.ringAllGather(bl)
	})
}

func (c *Comm) ReduceScatter(ctx context.Context, send, recv comm.Buffer) error {
	return c.ReduceScatterV(ctx, send, recv, repeat(recv.Len(), c.size))
}

func (c *Comm) ReduceScatterV(ctx context.Context, send, recv comm.Buffer, counts []int) error {
	return c.run(ctx, []comm.Buffer{send, recv}, func() error {
		if c.size > 1 && c.useLocal(send.Bytes()) {
			return c.localReduceScatter(send.DType(), send.Host(), recv.Host(), counts)
		}
		return c.reduceScatter(send.DType(), send.Host(), recv.Host(), counts)
	})
}

func (c *Comm) reduceScatter(dt dtype.DType, send, recv []byte, counts []int) error {
	esz := dt.Size()
	in := blocks(send, counts, esz)
	if c.size == 1 {
		if !sameMemory(in[0], recv) {
			copy(recv, in[0])
		}
		return nil
	}
	work := blocks(c.scratchBytes(len(send)), counts, esz)
	return c.ringReduceScatter(dt, in, work, recv)
}

func (c *Comm) AllReduce(ctx context.Context, send, recv comm.Buffer) error {
	return c.run(ctx, []comm.Buffer{send, recv}, func() error {
		if c.size > 1 && c.useLocal(send.Bytes()) {
			return c.localAllReduce(send.DType(), send.Host(), recv.Host())
		}
		counts := evenCounts(send.Len(), c.size)
		esz := send.DType().Size()
		own := blocks(recv.Host(), counts, esz)
		// Reduce-scatter leaves this rank's block of the sum in place in recv; it reads
		// send[j] only before writing recv[j], so send and recv may be the same memory.
		if err := c.reduceScatter(send.DType(), send.Host(), own[c.rank], counts); err != nil {
			return err
		}
		if c.size == 1 {
			return nil
		}
		return c.ringAllGather(own)
	})
}

func (c *Comm) Broadcast(ctx context.Context, buf comm.Buffer, root int) error {
	return c.run(ctx, []comm.Buffer{buf}, func() error {
		if c.size == 1 {
			return nil
		}
		if c.useLocal(buf.Bytes()) {
			return c.localBroadcast(buf.Host(), root)
		}
		data := buf.Host()
		nseg := (len(data) + segment - 1) / segment
		seg := func(k int) []byte { return data[k*segment : min((k+1)*segment, len(data))] }
		pos := mod(c.rank-root, c.size) // place in the chain root → root+1 → …
		sends := nseg
		if pos == c.size-1 {
			sends = 0 // the chain ends here
		}
		recvs := nseg
		if pos == 0 {
			recvs = 0
		}
		return c.pipeline(sends, seg, 1, recvs, func(k int) error { return c.readFull(seg(k)) })
	})
}

// Barrier passes one byte per rank around the ring: a rank can only have received every
// rank's byte after every rank has entered.
func (c *Comm) Barrier(ctx context.Context) error {
	if c.size == 1 {
		_, err := c.begin(ctx)
		return err
	}
	all := make([]byte, c.size)
	return c.allGatherBytes(ctx, []byte{1}, all)
}

// allGatherBytes is the untyped all-gather behind Barrier and Split.
func (c *Comm) allGatherBytes(ctx context.Context, mine, all []byte) error {
	release, err := c.begin(ctx)
	if err != nil {
		return err
	}
	k := len(mine)
	bl := blocks(all, repeat(k, c.size), 1)
	copy(bl[c.rank], mine)
	if c.size > 1 {
		err = c.ringAllGather(bl)
	}
	release()
	return c.end(ctx, err)
}

// sumInto sets dst = a + b element-wise (dst may alias a or b). bf16 is added in float32
// and rounded once per hop, as NCCL does.
func sumInto(dt dtype.DType, dst, a, b []byte) {
	switch dt {
	case dtype.Float32:
		d, x, y := asFloat32(dst), asFloat32(a), asFloat32(b)
		y = y[:len(d)]
		x = x[:len(d)]
		for i := range d {
			d[i] = x[i] + y[i]
		}
	case dtype.BFloat16:
		d, x, y := asBF16(dst), asBF16(a), asBF16(b)
		y = y[:len(d)]
		x = x[:len(d)]
		for i := range d {
			d[i] = dtype.FromFloat32(x[i].Float32() + y[i].Float32())
		}
	}
}

func asFloat32(b []byte) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

func asBF16(b []byte) []dtype.BF16 {
	return unsafe.Slice((*dtype.BF16)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/2)
}
