// Command launch runs a program as the N ranks of a moerun job on this host; see package
// launch for what it does and `launch --help` for its flags.
package main

import (
	"os"

	"github.com/moerun/moerun/launch"
)

func main() {
	os.Exit(launch.Main(os.Args, os.Stdout, os.Stderr))
}
