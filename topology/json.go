package topology

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/moerun/moerun/internal/jsonpos"
)

// shipped holds the topologies of machines we do not have (see Shipped).
//
//go:embed files/*.json
var shipped embed.FS

// Shipped lists the names of the shipped topologies, which Load takes in place of a path.
func Shipped() []string {
	entries, _ := fs.ReadDir(shipped, "files")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".json"))
	}
	slices.Sort(names)
	return names
}

// Load reads a topology from a JSON file, or a shipped one by name (see Shipped): a
// name without a slash that is a shipped name is the shipped file (write ./NAME for a file
// of that name in the current directory). Every error names the file and says what is
// wrong, in one line.
func Load(file string) (*Topology, error) {
	var data []byte
	if !strings.Contains(file, "/") && slices.Contains(Shipped(), file) {
		b, err := shipped.ReadFile(path.Join("files", file+".json"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		data = b
	} else {
		b, err := os.ReadFile(file)
		if errors.Is(err, fs.ErrNotExist) && !strings.Contains(file, "/") {
			return nil, fmt.Errorf("%s: no such file, and no shipped topology of that name (shipped: %s)", file, strings.Join(Shipped(), ", "))
		}
		if err != nil {
			return nil, err // the *PathError names the file
		}
		data = b
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return t, nil
}

// Parse reads a topology from JSON and validates it. Unknown fields are errors, so that a
// misspelt field is not silently dropped.
func Parse(data []byte) (*Topology, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var t Topology
	if err := dec.Decode(&t); err != nil {
		return nil, jsonError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the topology")
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// jsonError adds the line to a syntax or type error (encoding/json gives their byte offset).
func jsonError(data []byte, err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("empty file")
	}
	off, ok := jsonpos.Offset(err)
	if !ok {
		return err
	}
	line, _ := jsonpos.LineCol(data, off)
	return fmt.Errorf("line %d: %w", line, err)
}

// JSON is t as indented JSON, with every array or object that holds only numbers and
// strings on one line (a row of the link matrix reads as a row, a GPU as a line), ending
// with a newline. Parse reads it back to an equal Topology.
func (t *Topology) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(joinFlat(b), '\n'), nil
}

// Save writes t to file as JSON.
func (t *Topology) Save(file string) error {
	b, err := t.JSON()
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o666)
}

// joinFlat puts every array or object of the indented JSON b that holds no array or object
// on one line: ["X", "NV18"] and {"id": 0, "cpus": "0-7"}.
func joinFlat(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '"' { // copy a string whole: it may hold brackets
			j := stringEnd(b, i)
			out = append(out, b[i:j]...)
			i = j - 1
			continue
		}
		end, ok := flatEnd(b, i)
		if !ok {
			out = append(out, c)
			continue
		}
		out = append(out, c)
		for k := i + 1; k < end; k++ {
			switch d := b[k]; d {
			case '"':
				j := stringEnd(b, k)
				out = append(out, b[k:j]...)
				k = j - 1
			case ',', ':':
				out = append(out, d, ' ')
			case ' ', '\n', '\t':
			default:
				out = append(out, d)
			}
		}
		out = append(out, b[end])
		i = end
	}
	return out
}

// stringEnd returns the index just past the JSON string that starts at b[i] == '"'.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// flatEnd returns, when b[i] opens an array or object that holds no array or object, the
// index of its closing bracket.
func flatEnd(b []byte, i int) (int, bool) {
	if b[i] != '[' && b[i] != '{' {
		return 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '"':
			j = stringEnd(b, j) - 1
		case '[', '{':
			return 0, false
		case ']', '}':
			return j, true
		}
	}
	return 0, false
}
