// Package cliexit is how moerun's small commands end (bin/benchreport, bin/layouts): an
// error is one line on stderr after the command's name, with exit status 2 for bad input
// (flags, arguments, input files) and 1 for anything else.
package cliexit

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

type usage struct{ error }

func (u usage) Unwrap() error { return u.error }

// Usage marks err as bad input: exit status 2.
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return usage{err}
}

// Code prints err as one line ("name: err") on stderr and returns the exit status: 0 for
// nil, 2 for bad input, 1 otherwise.
func Code(name string, err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %s\n", name, strings.ReplaceAll(err.Error(), "\n", " "))
	var u usage
	if errors.As(err, &u) {
		return 2
	}
	return 1
}
