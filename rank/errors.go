package rank

import (
	"errors"
	"fmt"
)

// ErrInvalid is matched (errors.Is) by every error this package returns: all of them mean "the
// caller passed an impossible layout, rank or placement".
var ErrInvalid = errors.New("rank: invalid argument")

// invalidError keeps the message exactly as written (some messages are a user-facing contract,
// e.g. "np 3 is not a multiple of tp·pcp·pp = 2") while still matching ErrInvalid.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}
