// Command layouts ranks the layouts and expert placements of one MoE layer on a machine
// by predicted time per forward; see package experiment.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/moerun/moerun/experiment"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := experiment.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
