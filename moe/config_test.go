package moe

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moerun/moerun/moe/router"
)

// Every preset is a valid layer, and the real shapes carry the spec's §8 routing details.
func TestPresets_Section8(t *testing.T) {
	for _, name := range PresetNames() {
		c, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if c.Name != name {
			t.Errorf("%s: name %q", name, c.Name)
		}
	}
	v3, _ := Preset("deepseek-v3")
	rc, _ := v3.RouterConfig(make([]float32, 256))
	if v3.Hidden != 7168 || v3.Intermediate != 2048 || v3.Experts != 256 || v3.TopK != 8 || rc.Kind() != router.GroupedTopK ||
		rc.Scoring != router.Sigmoid || v3.Scale() != 2.5 || v3.SharedIntermediate != 2048 || !v3.Renormalize {
		t.Errorf("deepseek-v3: %+v", v3)
	}
	mx, _ := Preset("mixtral")
	if mx.Hidden != 4096 || mx.Intermediate != 14336 || mx.Experts != 8 || mx.TopK != 2 || !mx.Renormalize {
		t.Errorf("mixtral: %+v", mx)
	}
	q, _ := Preset("qwen3-30b-a3b")
	if q.Hidden != 2048 || q.Intermediate != 768 || q.Experts != 128 || q.TopK != 8 {
		t.Errorf("qwen3: %+v", q)
	}
	lite, _ := Preset("deepseek-v2-lite")
	if lite.Experts != 64 || lite.TopK != 6 || lite.SharedIntermediate != 2*1408 || lite.Renormalize {
		t.Errorf("deepseek-v2-lite: %+v", lite)
	}
	if _, err := Preset("nope"); err == nil || !strings.Contains(err.Error(), `unknown preset "nope": expected one of deepseek-v2-lite,`) {
		t.Errorf("unknown preset: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	base, _ := Preset("tiny")
	cases := []struct {
		edit func(c *Config)
		want string
	}{
		{func(c *Config) { c.TopK = 9 }, "top-k 9 is larger than the 8 experts"},
		{func(c *Config) { c.ExpertGroups, c.TopKGroup = 3, 1 }, "n_group 3 does not divide the 8 experts"},
		{func(c *Config) { c.ExpertGroups, c.TopKGroup = 4, 5 }, "topk_group 5: expected 1 to n_group 4"},
		{func(c *Config) { c.ExpertGroups, c.TopKGroup, c.TopK = 4, 1, 3 }, "top-k 3 is larger than the 2 experts in topk_group 1 groups"},
		{func(c *Config) { c.Hidden = 0 }, "hidden_size 0"},
		{func(c *Config) { c.WeightOnInput = true }, "apply_router_weight_on_input needs num_experts_per_tok 1, not 2"},
		{func(c *Config) { c.Activation = "relu" }, `hidden_act "relu": expected silu or gelu`},
		{func(c *Config) { c.DType = "fp8" }, `dtype "fp8": expected bf16 or float32`},
		{func(c *Config) { c.Scoring = "tanh" }, "tanh"},
		{func(c *Config) { c.Placement = "random" }, "expert_placement"},
		{func(c *Config) { c.RoutedScaling = -1 }, "routed_scaling_factor -1"},
		{func(c *Config) { c.Chunk = -3 }, "chunk_size -3"},
		{func(c *Config) { c.Arch = "llama" }, `arch "llama"`},
	}
	for _, tc := range cases {
		c := base
		tc.edit(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", c, err, tc.want)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	good := write("layer.json", `{"hidden_size": 32, "moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 1,
		"scoring_func": "sigmoid", "hidden_act": "gelu", "dtype": "float32", "apply_router_weight_on_input": true, "chunk_size": 5}`)
	c, err := LoadConfig(good)
	if err != nil || c.Name != "layer" || c.Hidden != 32 || !c.WeightOnInput || c.ChunkRows() != 5 {
		t.Errorf("good config: %+v, %v", c, err)
	}
	for body, want := range map[string]string{
		`{"hidden_size": 32,`:    "not a valid layer config (JSON)",
		`{"hiden_size": 32}`:     `unknown field "hiden_size"`,
		`{"hidden_size": "big"}`: "cannot unmarshal string",
		`{"hidden_size": 32} {}`: "more than one JSON value",
		`{"hidden_size": 32}`:    "moe_intermediate_size 0",
		`[1, 2]`:                 "cannot unmarshal array",
	} {
		_, err := LoadConfig(write("bad.json", body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", body, err, want)
		}
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing file loaded")
	}
}

// The state dict's experts are the reference's: one generator serves both.
func TestStateDictMatchesReference(t *testing.T) {
	cfg, _ := Preset("tiny-deepseek")
	ps, err := StateDict(cfg, 4)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := NewReference(cfg, 4)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Param{}
	for _, p := range ps {
		byName[p.Name] = p
	}
	if len(ps) != 2+3*cfg.Experts+3 {
		t.Errorf("%d params", len(ps))
	}
	w13, w2 := ref.expert(7)
	i, h := cfg.Intermediate, cfg.Hidden
	for name, want := range map[string][]float64{
		"experts.7.gate_proj.weight": w13[:i*h], "experts.7.up_proj.weight": w13[i*h:], "experts.7.down_proj.weight": w2,
	} {
		p := byName[name]
		got := make([]float32, p.Elements())
		p.Fill(got)
		for q := range got {
			if float64(got[q]) != want[q] {
				t.Fatalf("%s[%d] = %v, reference %v", name, q, got[q], want[q])
			}
		}
	}
	if p := byName["gate.e_score_correction_bias"]; !p.Float32 || p.Shape[0] != cfg.Experts {
		t.Errorf("bias: %+v", p)
	}
	mx, _ := Preset("tiny")
	ps, _ = StateDict(mx, 1)
	if ps[1].Name != "experts.0.w1.weight" || ps[2].Name != "experts.0.w3.weight" || ps[3].Name != "experts.0.w2.weight" {
		t.Errorf("mixtral names: %s %s %s", ps[1].Name, ps[2].Name, ps[3].Name)
	}
}
