package nccl

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The loader's failure paths, with a fake libnccl built by gcc: a library without every
// symbol is refused with the symbol named; a missing library names what was tried.
func TestLoadFailures(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc is needed to build a fake NCCL")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "fake.c")
	os.WriteFile(src, []byte("int ncclGetVersion(int *v) { *v = 22803; return 0; }\n"), 0o644)
	so := filepath.Join(dir, "libnccl-fake.so")
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", so, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	_, err := load([]string{so})
	if err == nil || !strings.Contains(err.Error(), `symbol "ncclGetUniqueId" not found`) {
		t.Errorf("fake NCCL: %v", err)
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := load([]string{"/nonexistent/libnccl.so.2"})
	if err == nil || !strings.Contains(err.Error(), "NCCL (libnccl.so.2) not found (tried /nonexistent/libnccl.so.2)") {
		t.Errorf("missing library: %v", err)
	}
}

func TestResultNames(t *testing.T) {
	if Result(7).Error() != "ncclInProgress" || Result(6).Error() != "ncclRemoteError" || Result(42).Error() != "ncclResult 42" {
		t.Error("result names")
	}
	e := &Error{Op: "ncclAllReduce", Code: 6, Detail: "peer gone"}
	if e.Error() != "nccl: ncclAllReduce: ncclRemoteError (peer gone)" {
		t.Error(e.Error())
	}
}
