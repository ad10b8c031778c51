package rendezvous

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Mutual proof of the job token. Both ends of a new connection hold the token and neither
// sends it: each proves that it holds it by a keyed hash over nonces that both chose. The
// store uses this before any request, and the tcp backend's ring links before any data. The
// four messages have fixed sizes, so reading them allocates nothing a peer chooses:
//
//	dialer → acceptor   hello      magic [16] | SHA-256(label)[:16] | nonceD [32]
//	acceptor → dialer   challenge  code u8 | nonceA [32] | proofA [32]
//	dialer → acceptor   proof      proofD [32]
//	acceptor → dialer   verdict    code u8
//
// proofX = HMAC-SHA256(token, label | 0 | role X | nonceD | nonceA), compared in constant
// time. Fresh random nonces on both sides make a recorded exchange useless later; the role
// byte stops a peer from reflecting the acceptor's proof back as its own; the label binds
// a proof to one use (the store, one link of one ring), so a proof for one opens no other.
// The acceptor proves first, so a dialer knows it reached its own job before it proves
// anything itself. This authenticates who opened the connection. It does not encrypt, and
// it cannot stop someone who can rewrite traffic on the path from taking over a connection
// after the proof; jobs across hosts belong on a private network.
const (
	// MinTokenLen is the shortest job token a client accepts: 128 random bits as hex.
	MinTokenLen = 32

	authMagic    = "moerun-auth/1\x00\x00\x00"
	labelSumLen  = 16
	nonceLen     = 32
	proofLen     = sha256.Size
	helloLen     = len(authMagic) + labelSumLen + nonceLen
	challengeLen = 1 + nonceLen + proofLen
)

// authCode is the first byte of a challenge and the only byte of a verdict.
type authCode uint8

const (
	codeOK       authCode = iota
	codeMismatch          // verdict: the dialer's proof is wrong
	codeBusy              // challenge: the acceptor takes no more connections now
	codeProtocol          // challenge: the hello is not this protocol
	codeOtherUse          // challenge: the hello is for another label
)

const (
	roleDialer   = 'D'
	roleAcceptor = 'A'
)

// ErrTokenMismatch is returned by HandshakeDial and HandshakeAccept when the peer does not
// hold this job's token (or proves it for another label). It is final: retrying with the
// same token cannot succeed.
var ErrTokenMismatch = errors.New("token mismatch")

// errBusy is a challenge with codeBusy: the acceptor is at its connection limit.
var errBusy = errors.New("the acceptor is busy")

// errEarlyClose is a peer that hung up before its first answer: a store at its limit of
// connections still proving their token closes new ones at once.
var errEarlyClose = errors.New("the peer closed the connection before answering")

// CheckToken reports whether token is long enough to be a job token.
func CheckToken(token string) error {
	if len(token) < MinTokenLen {
		return fmt.Errorf("the job token (%s) has %d characters, expected at least %d: 128 random bits as hex, as `head -c16 /dev/urandom | xxd -p` prints", EnvToken, len(token), MinTokenLen)
	}
	return nil
}

// HandshakeDial runs the dialer's side of the mutual token proof over a fresh connection,
// for the given label (which the acceptor must use too). It returns nil once both sides
// have proved the token, ErrTokenMismatch when either proof fails, or another
// error (the peer does not speak the protocol, or expects another label). The caller bounds
// it with deadlines on rw.
func HandshakeDial(rw io.ReadWriter, token, label string) error {
	var nonceD [nonceLen]byte
	rand.Read(nonceD[:]) // never fails (crypto/rand)
	hello := make([]byte, 0, helloLen)
	hello = append(hello, authMagic...)
	hello = append(hello, labelSum(label)...)
	hello = append(hello, nonceD[:]...)
	if _, err := rw.Write(hello); err != nil {
		if isReset(err) {
			return fmt.Errorf("%w (%w)", errEarlyClose, err)
		}
		return err
	}
	var ch [challengeLen]byte
	if _, err := io.ReadFull(rw, ch[:]); err != nil {
		if errors.Is(err, io.EOF) || isReset(err) {
			return fmt.Errorf("%w (%w)", errEarlyClose, err)
		}
		return noEOF(err)
	}
	switch code := authCode(ch[0]); code {
	case codeOK:
	case codeBusy:
		return errBusy
	case codeProtocol:
		return errors.New("the peer does not speak this handshake (another moerun version?)")
	case codeOtherUse:
		return errors.New("the peer expects another connection (another group, or another moerun version)")
	default:
		return fmt.Errorf("unknown handshake code %d", code)
	}
	nonceA := ch[1 : 1+nonceLen]
	want := proof(token, label, roleAcceptor, nonceD[:], nonceA)
	if subtle.ConstantTimeCompare(ch[1+nonceLen:], want) != 1 {
		// Send a proof that cannot verify rather than just leaving: the acceptor then logs
		// a wrong token, not a dropped connection.
		rw.Write(make([]byte, proofLen))
		return ErrTokenMismatch
	}
	if _, err := rw.Write(proof(token, label, roleDialer, nonceD[:], nonceA)); err != nil {
		return err
	}
	var verdict [1]byte
	if _, err := io.ReadFull(rw, verdict[:]); err != nil {
		return noEOF(err)
	}
	if authCode(verdict[0]) != codeOK {
		return ErrTokenMismatch
	}
	return nil
}

// HandshakeAccept runs the acceptor's side of the mutual token proof over a fresh
// connection: it reads the dialer's hello, proves the token, and checks the dialer's
// proof. It returns nil once both have proved it, ErrTokenMismatch when the
// dialer's proof fails, or another error for a peer that is not a dialer of this label.
// The caller bounds it with deadlines on rw.
func HandshakeAccept(rw io.ReadWriter, token, label string) error {
	return handshakeAccept(rw, token, label, codeOK)
}

// handshakeAccept is HandshakeAccept; with code codeBusy it reads the hello and answers
// that the acceptor is busy, so that the dialer gets a reason rather than a reset.
func handshakeAccept(rw io.ReadWriter, token, label string, code authCode) error {
	var hello [helloLen]byte
	if _, err := io.ReadFull(rw, hello[:]); err != nil {
		return err
	}
	magic, sum, nonceD := hello[:len(authMagic)], hello[len(authMagic):len(authMagic)+labelSumLen], hello[len(authMagic)+labelSumLen:]
	var why error
	switch {
	case code != codeOK:
		why = errBusy
	case string(magic) != authMagic:
		code, why = codeProtocol, fmt.Errorf("not a moerun handshake (it starts %s)", strconv.QuoteToASCII(string(magic)))
	case string(sum) != string(labelSum(label)):
		code, why = codeOtherUse, errors.New("a handshake for another connection (another group, or another moerun version)")
	}
	ch := make([]byte, challengeLen)
	ch[0] = byte(code)
	if why != nil {
		rw.Write(ch)
		return why
	}
	nonceA := ch[1 : 1+nonceLen]
	rand.Read(nonceA)
	copy(ch[1+nonceLen:], proof(token, label, roleAcceptor, nonceD, nonceA))
	if _, err := rw.Write(ch); err != nil {
		return err
	}
	var got [proofLen]byte
	if _, err := io.ReadFull(rw, got[:]); err != nil {
		return noEOF(err)
	}
	if subtle.ConstantTimeCompare(got[:], proof(token, label, roleDialer, nonceD, nonceA)) != 1 {
		rw.Write([]byte{byte(codeMismatch)})
		return ErrTokenMismatch
	}
	_, err := rw.Write([]byte{byte(codeOK)})
	return err
}

func proof(token, label string, role byte, nonceD, nonceA []byte) []byte {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(label))
	m.Write([]byte{0, role})
	m.Write(nonceD)
	m.Write(nonceA)
	return m.Sum(nil)
}

func labelSum(label string) []byte {
	s := sha256.Sum256([]byte(label))
	return s[:labelSumLen]
}
