// Command worker is one rank of a moerun job; see package worker.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/moerun/moerun/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	release := worker.ExitIfStuck(ctx, os.Stderr)
	code := worker.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	release()
	stop()
	os.Exit(code)
}
