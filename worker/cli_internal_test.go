package worker

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// A stopped worker that cannot unwind exits StuckExitAfter later with 143; one that
// finishes first (release) or is never stopped does not.
func TestExitIfStuck(t *testing.T) {
	exited := make(chan int, 1)
	exit := func(code int) { exited <- code }
	var stderr strings.Builder
	ctx, cancel := context.WithCancel(context.Background())
	release := exitIfStuck(ctx, 20*time.Millisecond, &stderr, exit)
	cancel()
	select {
	case code := <-exited:
		if code != 143 || !strings.Contains(stderr.String(), "still inside a device call") {
			t.Errorf("exit %d, stderr %q", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit 5 s after the stop")
	}
	release()

	ctx, cancel = context.WithCancel(context.Background())
	release = exitIfStuck(ctx, time.Minute, io.Discard, exit)
	cancel()
	release() // unwound in time
	release() // twice is fine
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	release2 := exitIfStuck(ctx2, time.Millisecond, io.Discard, exit) // never stopped
	select {
	case code := <-exited:
		t.Fatalf("exit %d without a stuck stop", code)
	case <-time.After(100 * time.Millisecond):
	}
	release2()
}
