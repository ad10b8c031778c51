package topology

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteText compares the printout of every shipped topology with its golden file in
// testdata/text (go test ./topology -run TestWriteText -rewrite writes them).
func TestWriteText(t *testing.T) {
	for _, name := range Shipped() {
		t.Run(name, func(t *testing.T) {
			top, err := Load(name)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := top.WriteText(&b); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "text", name+".txt")
			if *rewrite {
				if err := os.WriteFile(golden, b.Bytes(), 0o666); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("WriteText(%s) =\n%s\nwant (%s)\n%s", name, b.Bytes(), golden, want)
			}
		})
	}
}
