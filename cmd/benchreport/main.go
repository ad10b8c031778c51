// Command benchreport compares a bench/gpu.sh results folder with PyTorch's numbers; see
// package benchreport.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/moerun/moerun/benchreport"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := benchreport.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
