package worker

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/internal/atomicfile"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/safetensors"
)

// maxSavedWeights bounds the weights --save writes (the full layer, from rank 0).
const maxSavedWeights = 1 << 30

// save writes this rank's inputs, router logits and output of the row as
// rank<R>-tokens<T>.safetensors, and, on rank 0 once, the layer's weights under the
// transformers names (weights.safetensors, when under 1 GiB) and config.json, so that
// PyTorch can load the block and check the numbers independently.
func (l *layerRun) save(dir string, weights bool) error {
	c := l.cfg
	dt, _ := c.ElementType()
	t := l.out.Rows
	tensor := func(name string, src moe.Tensor, cols int, keepF32 bool) (safetensors.Tensor, error) {
		v := make([]float32, t*cols)
		if err := l.ops.Download(src, v); err != nil {
			return safetensors.Tensor{}, err
		}
		l.job.Synced() // the download waited for the device
		return encode(name, []int{t, cols}, v, dt, keepF32), nil
	}
	var ts []safetensors.Tensor
	for _, s := range []struct {
		name    string
		src     moe.Tensor
		cols    int
		keepF32 bool
	}{{"hidden_states", l.x, c.Hidden, false}, {"router_logits", l.logits, c.Experts, true}, {"output", l.out, c.Hidden, false}} {
		tt, err := tensor(s.name, s.src, s.cols, s.keepF32)
		if err != nil {
			return err
		}
		ts = append(ts, tt)
	}
	r := l.job.Place.Rank
	meta := map[string]string{
		"rank": strconv.Itoa(r), "dp_rank": strconv.Itoa(l.shard.Coord.DP), "tp_rank": strconv.Itoa(l.shard.Coord.TP),
		"layout": l.shard.Layout.String(), "seed": strconv.FormatUint(l.seed, 10), "tokens_per_dp_rank": formatTokens(l.tokens),
	}
	name := filepath.Join(dir, fmt.Sprintf("rank%d-tokens%s.safetensors", r, formatTokens(l.tokens)))
	if err := safetensors.WriteFile(name, meta, ts); err != nil {
		return fmt.Errorf("--save: %w", err)
	}
	if !weights {
		return nil
	}
	cfgJSON, err := json.MarshalIndent(struct {
		Layer  moe.Config `json:"layer"`
		Layout string     `json:"layout"`
		Seed   uint64     `json:"seed"`
	}{c, l.shard.Layout.String(), l.seed}, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, "config.json"), func(w io.Writer) error { _, err := w.Write(append(cfgJSON, '\n')); return err }); err != nil {
		return err
	}
	return saveWeights(filepath.Join(dir, "weights.safetensors"), c, l.seed, meta)
}

// saveWeights streams the unsharded layer's parameters into path, one at a time, unless
// they exceed maxSavedWeights.
func saveWeights(path string, c moe.Config, seed uint64, meta map[string]string) error {
	params, err := moe.StateDict(c, seed)
	if err != nil {
		return err
	}
	dt, _ := c.ElementType()
	var total int64
	specs := make([]safetensors.Spec, len(params))
	for i, p := range params {
		et := dt
		if p.Float32 {
			et = dtype.Float32
		}
		specs[i] = safetensors.Spec{Name: p.Name, DType: stDType(et), Shape: p.Shape}
		total += int64(p.Elements() * et.Size())
	}
	if total > maxSavedWeights {
		return nil // too large to be useful as a file; the seed regenerates them
	}
	w, err := safetensors.Create(path, map[string]string{"seed": meta["seed"], "arch": c.Arch}, specs)
	if err != nil {
		return fmt.Errorf("--save: %w", err)
	}
	for _, p := range params {
		v := make([]float32, p.Elements())
		p.Fill(v)
		if err := w.Write(p.Name, encode(p.Name, p.Shape, v, dt, p.Float32).Data); err != nil {
			w.Abort()
			return fmt.Errorf("--save: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("--save: %w", err)
	}
	return nil
}

func stDType(t dtype.DType) string {
	if t == dtype.BFloat16 {
		return "BF16"
	}
	return "F32"
}

// encode stores float32 values as the layer's dtype (exact: they were rounded to it), or
// as float32 when keepF32.
func encode(name string, shape []int, v []float32, dt dtype.DType, keepF32 bool) safetensors.Tensor {
	if dt == dtype.BFloat16 && !keepF32 {
		bits := make([]uint16, len(v))
		for i, f := range v {
			bits[i] = uint16(dtype.FromFloat32(f))
		}
		return safetensors.BF16(name, shape, bits)
	}
	return safetensors.F32(name, shape, v)
}
