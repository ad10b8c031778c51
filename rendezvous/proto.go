package rendezvous

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"slices"
)

// Wire format (all integers big-endian). A connection opens with the mutual token proof of
// auth.go under storeLabel; then it is a strict request/response exchange: the client sends
// one request frame and reads one response frame before the next.
//
//	request:  op u8 | arg i64 | keyLen u32 | valLen u32 | key | value
//	response: status u8 | arg i64 | valLen u32 | value
//
// Lengths are checked against the limits below before anything past the header is read,
// and a body's buffer grows only as its bytes arrive, so a length prefix alone costs no
// memory. A frame over a limit is answered with statusError and the connection is closed,
// since its body cannot be skipped cheaply.
const (
	// MaxKeyLen is the longest key, in bytes.
	MaxKeyLen = 4 << 10
	// MaxValueLen is the longest value, in bytes.
	MaxValueLen = 64 << 20

	// storeLabel binds the store's token proofs to the store and to this version of its
	// frames: a client of another version is told so before it sends a frame.
	storeLabel = "moerun-store/2"

	reqHeaderLen  = 1 + 8 + 4 + 4
	respHeaderLen = 1 + 8 + 4

	// bodyChunk is how far a body's buffer may run ahead of the bytes received.
	bodyChunk = 64 << 10
)

type op uint8

const (
	opSet  op = 1 + iota // key, value
	opGet                // key; statusNotFound when absent
	opWait               // key; arg: timeout in nanoseconds, 0 = none; statusTimeout at expiry
	opAdd                // key; arg: delta; response arg: the new value
)

func (o op) String() string {
	switch o {
	case opSet:
		return "set"
	case opGet:
		return "get"
	case opWait:
		return "wait"
	case opAdd:
		return "add"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

type status uint8

const (
	statusOK status = iota
	statusNotFound
	statusTimeout
	statusError // value: the message
)

type request struct {
	op    op
	arg   int64
	key   string
	value []byte
}

type response struct {
	status status
	arg    int64
	value  []byte
}

// ErrBadToken is returned (wrapped, naming the store's address) by Dial and NewClient when
// the store does not prove the client's token: it serves another job. It matches
// ErrTokenMismatch too, and it is final: retrying with the same token cannot succeed.
var ErrBadToken = fmt.Errorf("the store belongs to another job (%w)", ErrTokenMismatch)

// frameError is a frame refused from its header: a request the server will not read (too
// large, unknown op, no room left in the store), which it answers with statusError before
// closing the connection, or a response over the limit, which ends the client's connection.
type frameError struct{ msg string }

func (e *frameError) Error() string { return e.msg }

// NewToken returns a fresh job token: 128 random bits, hex-encoded.
func NewToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("rendezvous: new token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func checkKey(key string) error {
	if len(key) > MaxKeyLen {
		return fmt.Errorf("key of %d bytes is over the limit of %d", len(key), MaxKeyLen)
	}
	return nil
}

func checkValue(value []byte) error {
	if len(value) > MaxValueLen {
		return fmt.Errorf("value of %d bytes is over the limit of %d", len(value), MaxValueLen)
	}
	return nil
}

func writeRequest(w io.Writer, q request) error {
	var h [reqHeaderLen]byte
	h[0] = byte(q.op)
	binary.BigEndian.PutUint64(h[1:], uint64(q.arg))
	binary.BigEndian.PutUint32(h[9:], uint32(len(q.key)))
	binary.BigEndian.PutUint32(h[13:], uint32(len(q.value)))
	return writeFrame(w, h[:], []byte(q.key), q.value)
}

// writeFrame writes the parts of a frame, small ones as one Write. Empty parts are skipped:
// a zero-length Write on a net.Pipe blocks until the peer reads.
func writeFrame(w io.Writer, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n <= 64<<10 {
		buf := make([]byte, 0, n)
		for _, p := range parts {
			buf = append(buf, p...)
		}
		_, err := w.Write(buf)
		return err
	}
	bufs := make(net.Buffers, 0, len(parts))
	for _, p := range parts {
		if len(p) > 0 {
			bufs = append(bufs, p)
		}
	}
	_, err := bufs.WriteTo(w)
	return err
}

// reqHeader is a request's fixed part, read before deciding whether to read the rest.
type reqHeader struct {
	op             op
	arg            int64
	keyLen, valLen uint32
}

func readReqHeader(r io.Reader) (reqHeader, error) {
	var h [reqHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return reqHeader{}, err
	}
	return reqHeader{
		op:     op(h[0]),
		arg:    int64(binary.BigEndian.Uint64(h[1:])),
		keyLen: binary.BigEndian.Uint32(h[9:]),
		valLen: binary.BigEndian.Uint32(h[13:]),
	}, nil
}

// check refuses a header whose op is unknown or whose lengths pass the limits.
func (h reqHeader) check() error {
	switch {
	case h.op < opSet || h.op > opAdd:
		return &frameError{fmt.Sprintf("unknown %v", h.op)}
	case h.keyLen > MaxKeyLen:
		return &frameError{fmt.Sprintf("frame too large: key of %d bytes (limit %d)", h.keyLen, MaxKeyLen)}
	case h.valLen > MaxValueLen:
		return &frameError{fmt.Sprintf("frame too large: value of %d bytes (limit %d)", h.valLen, MaxValueLen)}
	}
	return nil
}

// size is what the body will hold in memory once read.
func (h reqHeader) size() int64 { return int64(h.keyLen) + int64(h.valLen) }

// readReqBody reads the key and value that h announces (h must have passed check).
func readReqBody(r io.Reader, h reqHeader) (request, error) {
	q := request{op: h.op, arg: h.arg}
	key, err := readBody(r, int(h.keyLen))
	if err != nil {
		return request{}, err
	}
	q.key = string(key)
	if q.value, err = readBody(r, int(h.valLen)); err != nil {
		return request{}, err
	}
	return q, nil
}

// readRequest reads and checks one whole request: the decoder under the server's reader
// (which reads the header and the body separately, to account for the body first).
func readRequest(r io.Reader) (request, error) {
	h, err := readReqHeader(r)
	if err != nil {
		return request{}, err
	}
	if err := h.check(); err != nil {
		return request{}, err
	}
	return readReqBody(r, h)
}

// readBody reads n bytes into a buffer that grows (doubling) as they arrive, never more
// than bodyChunk or the bytes received so far ahead of them: a peer that announces 64 MiB
// and sends 10 bytes costs 64 KiB, not 64 MiB. An EOF inside the body is
// ErrUnexpectedEOF.
func readBody(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, 0, min(n, bodyChunk))
	for len(b) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(len(b), n-len(b)))
		}
		k, err := io.ReadFull(r, b[len(b):min(cap(b), n)])
		b = b[:len(b)+k]
		if err != nil {
			return nil, noEOF(err)
		}
	}
	return b, nil
}

func writeResponse(w io.Writer, p response) error {
	var h [respHeaderLen]byte
	h[0] = byte(p.status)
	binary.BigEndian.PutUint64(h[1:], uint64(p.arg))
	binary.BigEndian.PutUint32(h[9:], uint32(len(p.value)))
	return writeFrame(w, h[:], p.value)
}

func readResponse(r io.Reader) (response, error) {
	var h [respHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return response{}, err
	}
	p := response{status: status(h[0]), arg: int64(binary.BigEndian.Uint64(h[1:]))}
	n := binary.BigEndian.Uint32(h[9:])
	if n > MaxValueLen {
		return response{}, &frameError{fmt.Sprintf("response of %d bytes is over the limit of %d", n, MaxValueLen)}
	}
	var err error
	if p.value, err = readBody(r, int(n)); err != nil {
		return response{}, err
	}
	return p, nil
}

// noEOF turns an EOF in the middle of a frame into ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
