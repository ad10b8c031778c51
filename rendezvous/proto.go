package rendezvous

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
)

// Wire format (all integers big-endian). A connection is a strict request/response exchange:
// the client sends one request frame and reads one response frame before the next.
//
//	request:  op u8 | arg i64 | keyLen u32 | valLen u32 | key | value
//	response: status u8 | arg i64 | valLen u32 | value
//
// The first request must be opHello with arg = protoVersion and the token as value; the
// server answers statusOK or statusBadToken (and then closes). Lengths are checked against
// the limits below before anything is allocated; a frame over a limit is answered with
// statusError and the connection is closed, since its body cannot be skipped cheaply.
const (
	// MaxKeyLen is the longest key, in bytes.
	MaxKeyLen = 4 << 10
	// MaxValueLen is the longest value, in bytes.
	MaxValueLen = 64 << 20

	// maxTokenLen bounds what an unauthenticated peer can make the server read.
	maxTokenLen = 256

	protoVersion = 1

	reqHeaderLen  = 1 + 8 + 4 + 4
	respHeaderLen = 1 + 8 + 4
)

type op uint8

const (
	opHello op = 1 + iota // arg: protoVersion; value: token
	opSet                 // key, value
	opGet                 // key; statusNotFound when absent
	opWait                // key; arg: timeout in nanoseconds, 0 = none; statusTimeout at expiry
	opAdd                 // key; arg: delta; response arg: the new value
)

func (o op) String() string {
	switch o {
	case opHello:
		return "hello"
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
	statusBadToken
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

// ErrBadToken is returned by Dial and NewClient when the server refuses the token. It is
// final: retrying with the same token cannot succeed.
var ErrBadToken = errors.New("rendezvous: the store refused the job token")

// frameError is a request the server refuses to read (too large, unknown op); the server
// answers it with statusError and closes the connection.
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

// readRequest reads one request. Before authentication only a hello with a short token is
// accepted, so an unauthenticated peer cannot make the server allocate much.
func readRequest(r *bufio.Reader, authed bool) (request, error) {
	var h [reqHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return request{}, err
	}
	q := request{op: op(h[0]), arg: int64(binary.BigEndian.Uint64(h[1:]))}
	keyLen := binary.BigEndian.Uint32(h[9:])
	valLen := binary.BigEndian.Uint32(h[13:])
	switch {
	case !authed && q.op != opHello:
		return request{}, &frameError{fmt.Sprintf("expected hello, got %v", q.op)}
	case !authed && (keyLen != 0 || valLen > maxTokenLen):
		return request{}, &frameError{fmt.Sprintf("hello frame too large (key %d, token %d bytes)", keyLen, valLen)}
	case authed && (q.op < opSet || q.op > opAdd):
		return request{}, &frameError{fmt.Sprintf("unknown %v", q.op)}
	case keyLen > MaxKeyLen:
		return request{}, &frameError{fmt.Sprintf("frame too large: key of %d bytes (limit %d)", keyLen, MaxKeyLen)}
	case valLen > MaxValueLen:
		return request{}, &frameError{fmt.Sprintf("frame too large: value of %d bytes (limit %d)", valLen, MaxValueLen)}
	}
	body := make([]byte, int(keyLen)+int(valLen))
	if _, err := io.ReadFull(r, body); err != nil {
		return request{}, noEOF(err)
	}
	q.key = string(body[:keyLen])
	q.value = body[keyLen:len(body):len(body)]
	return q, nil
}

func writeResponse(w io.Writer, p response) error {
	var h [respHeaderLen]byte
	h[0] = byte(p.status)
	binary.BigEndian.PutUint64(h[1:], uint64(p.arg))
	binary.BigEndian.PutUint32(h[9:], uint32(len(p.value)))
	return writeFrame(w, h[:], p.value)
}

func readResponse(r *bufio.Reader) (response, error) {
	var h [respHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return response{}, err
	}
	p := response{status: status(h[0]), arg: int64(binary.BigEndian.Uint64(h[1:]))}
	n := binary.BigEndian.Uint32(h[9:])
	if n > MaxValueLen {
		return response{}, fmt.Errorf("response of %d bytes is over the limit of %d", n, MaxValueLen)
	}
	p.value = make([]byte, n)
	if _, err := io.ReadFull(r, p.value); err != nil {
		return response{}, noEOF(err)
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
