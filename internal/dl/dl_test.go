package dl

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The search order: an override alone; else sonames, then matches in the directories,
// then the fallbacks.
func TestCandidates(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "v1", "lib")
	os.MkdirAll(lib, 0o755)
	os.WriteFile(filepath.Join(lib, "libx.so.2"), nil, 0o644)
	t.Setenv("MOERUN_TEST_LIB", "")
	got := Candidates("MOERUN_TEST_LIB", []string{"libx.so.2"}, []string{filepath.Join(dir, "v*", "lib"), "/nonexistent/*"}, []string{"libx.so.1"})
	want := []string{"libx.so.2", filepath.Join(lib, "libx.so.2"), "libx.so.1"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	t.Setenv("MOERUN_TEST_LIB", "/my/libx.so")
	if got := Candidates("MOERUN_TEST_LIB", []string{"libx.so.2"}, nil, nil); !slices.Equal(got, []string{"/my/libx.so"}) {
		t.Errorf("override: %v", got)
	}
}

func TestOpenAndSym(t *testing.T) {
	if _, err := Open("nothing", nil); err == nil {
		t.Error("no candidates accepted")
	}
	_, err := Open("libnope", []string{"/nonexistent/libnope.so"})
	if err == nil || !strings.Contains(err.Error(), "libnope not found (tried /nonexistent/libnope.so)") {
		t.Errorf("missing: %v", err)
	}
	l, err := Open("libc", []string{"libc.so.6"})
	if err != nil {
		t.Skipf("no libc.so.6 to open: %v", err)
	}
	defer l.Close()
	if _, err := l.Sym("strlen"); err != nil {
		t.Error(err)
	}
	if _, err := l.Sym("no_such_symbol_here"); err == nil || !strings.Contains(err.Error(), `symbol "no_such_symbol_here" not found in libc.so.6`) {
		t.Errorf("missing symbol: %v", err)
	}
}
