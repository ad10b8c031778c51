package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestNoLeaks runs 50 consecutive np 8 jobs of real workers, every other one failing on
// purpose (rank 3 exits with status 7 before its 5th collective), and then finds no
// process of this binary (launch or worker), no socket listening for one, no temporary
// file and no shared-memory segment left behind; then pairs of jobs started at the same
// moment, which must never clash on a port. A job still running is counted first, so the
// counters are shown to see what they must not see afterwards.
func TestNoLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("50 jobs of 8 processes")
	}
	bin := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"launch", "worker"} {
		if err := os.Symlink(exe, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	tmp := t.TempDir()
	env := append(os.Environ(), "TMPDIR="+tmp, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	job := func(extra ...string) *exec.Cmd {
		args := append([]string{"-np", "8", "--timeout", "60s", filepath.Join(bin, "worker"), "collectives", "-b", "1K", "-e", "2K", "-n", "1", "-w", "0"}, extra...)
		cmd := exec.Command(filepath.Join(bin, "launch"), args...)
		cmd.Env = env
		return cmd
	}
	shmBefore := dirNames(t, "/dev/shm")

	// The counters see a running job: start one that hangs (rank 0 before its 6th
	// collective), wait until its processes listen, then stop it with SIGINT.
	hung := job()
	hung.Env = append(hung.Env, "MOERUN_TEST_HANG=0:6")
	if err := hung.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(pollLimit)
	for {
		procs, listening := ownProcesses(t, exe)
		if len(procs) >= 9 && listening > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a running job shows %d processes and %d listening sockets", len(procs), listening)
		}
		time.Sleep(20 * time.Millisecond)
	}
	hung.Process.Signal(os.Interrupt)
	hung.Wait()
	expectNothingLeft(t, exe, tmp, shmBefore, "after the interrupted job")

	start := time.Now()
	failed := 0
	for i := range 50 {
		cmd := job()
		if i%2 == 1 {
			cmd.Env = append(cmd.Env, "MOERUN_TEST_EXIT=3:5:7")
		}
		out, err := cmd.CombinedOutput()
		code := cmd.ProcessState.ExitCode()
		switch {
		case i%2 == 0 && err != nil:
			t.Fatalf("job %d: %v\n%s", i, err, out)
		case i%2 == 1 && code != 7:
			t.Fatalf("job %d: exit %d, want 7 (rank 3's)\n%s", i, code, out)
		case i%2 == 1:
			failed++
		}
	}
	t.Logf("50 jobs of 8 ranks (%d failing) in %v", failed, time.Since(start).Round(time.Millisecond))
	expectNothingLeft(t, exe, tmp, shmBefore, "after 50 jobs")

	// Two jobs at once, five times: each picks its own ports (the store and the rings
	// listen on port 0), so both pass.
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		outs := make([][]byte, 2)
		for k := range 2 {
			wg.Go(func() { outs[k], errs[k] = job().CombinedOutput() })
		}
		wg.Wait()
		for k := range 2 {
			if errs[k] != nil {
				t.Fatalf("round %d, job %d of two at once: %v\n%s", round, k, errs[k], outs[k])
			}
		}
	}
	expectNothingLeft(t, exe, tmp, shmBefore, "after the concurrent jobs")
}

// expectNothingLeft waits up to 2 s (the launcher's promise) for every process of exe
// other than this one to be gone, then checks the temporary directory is empty and
// /dev/shm has nothing new.
func expectNothingLeft(t *testing.T, exe, tmp string, shmBefore map[string]bool, when string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		procs, listening := ownProcesses(t, exe)
		if len(procs) == 0 && listening == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d processes (%v) and %d listening sockets are left", when, len(procs), procs, listening)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left := dirNames(t, tmp); len(left) > 0 {
		t.Fatalf("%s: temporary files left: %v", when, left)
	}
	for name := range dirNames(t, "/dev/shm") {
		if !shmBefore[name] {
			t.Fatalf("%s: shared-memory segment left: /dev/shm/%s", when, name)
		}
	}
}

// ownProcesses lists the live processes running exe, except this one (launch and worker
// are this test binary under other names), and counts the TCP sockets in LISTEN state
// that they hold. Zombies are not live: they hold no sockets.
func ownProcesses(t *testing.T, exe string) (pids []int, listening int) {
	t.Helper()
	target, err := filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	listen := listeningInodes(t)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if p, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || p != target {
			continue
		}
		if procState(pid) == "" { // gone, or a zombie
			continue
		}
		pids = append(pids, pid)
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && listen[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
				listening++
			}
		}
	}
	return pids, listening
}

// listeningInodes are the socket inodes of every TCP socket in LISTEN state (state 0A).
func listeningInodes(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if fields := strings.Fields(line); len(fields) > 9 && fields[3] == "0A" {
				out[fields[9]] = true
			}
		}
	}
	return out
}

func dirNames(t *testing.T, dir string) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names
}
