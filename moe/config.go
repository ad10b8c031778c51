// Package moe owns one MoE layer as vLLM's DefaultMoERunner runs it: the layer config and
// presets, deterministic weights and inputs, the chunked forward pass (routed-input
// transform, padding, naive dispatch/combine, PCP gather/scatter, experts, shared experts,
// reductions), and a float64 reference of the unsharded layer. Compute goes through Ops
// and communication through comm.Communicator, so this package knows nothing of devices
// or processes. The behaviour follows ../shared/docs/moe-semantics.md; section numbers in
// comments point there.
package moe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/moe/router"
	"github.com/moerun/moerun/rank"
)

// Config is one MoE layer. JSON field names follow the Hugging Face configs where one
// exists (hidden_size, moe_intermediate_size, n_group, …).
type Config struct {
	Name string `json:"name,omitempty"`
	// Arch is the transformers block whose parameter names --save uses: "mixtral",
	// "qwen3_moe" or "deepseek_v3".
	Arch         string `json:"arch,omitempty"`
	Hidden       int    `json:"hidden_size"`
	Intermediate int    `json:"moe_intermediate_size"`
	Experts      int    `json:"num_experts"`
	TopK         int    `json:"num_experts_per_tok"`
	// Scoring is softmax, sigmoid or sqrtsoftplus.
	Scoring     string `json:"scoring_func"`
	Renormalize bool   `json:"norm_topk_prob"`
	// ExpertGroups and TopKGroup enable grouped top-k (DeepSeek) when ExpertGroups > 1.
	ExpertGroups int `json:"n_group,omitempty"`
	TopKGroup    int `json:"topk_group,omitempty"`
	// ScoreBias adds a generated e_score_correction_bias (it picks experts, not weights).
	ScoreBias bool `json:"e_score_correction_bias,omitempty"`
	// RoutedScaling multiplies the routed experts' output (§1.3); 0 means 1.
	RoutedScaling float64 `json:"routed_scaling_factor,omitempty"`
	// Activation is silu or gelu (gated).
	Activation string `json:"hidden_act"`
	// SharedIntermediate is the total intermediate size of the shared experts (DeepSeek:
	// n_shared_experts × moe_intermediate_size); 0 means none.
	SharedIntermediate int `json:"shared_intermediate_size,omitempty"`
	// Latent is the routed experts' hidden size when a routed-input transform H→L and an
	// output transform L→H surround them (latent MoE); 0 means none.
	Latent int `json:"latent_size,omitempty"`
	// PadTo rounds the experts' hidden size up to a multiple (vLLM's hidden_dim round-up,
	// §1.6); 0 or 1 means none.
	PadTo int `json:"pad_hidden_to,omitempty"`
	// WeightOnInput scales each token's input by its router weight (top-k 1 only).
	WeightOnInput bool `json:"apply_router_weight_on_input,omitempty"`
	// DType is the activation and weight type: bf16 or float32.
	DType string `json:"dtype"`
	// Chunk is the rows per rank of one chunk of the forward pass (§1.5).
	Chunk int `json:"chunk_size,omitempty"`
	// Placement of experts on EP ranks: linear or round_robin.
	Placement string `json:"expert_placement,omitempty"`
	// PlacementRanks, when set, places the experts explicitly: list r holds the global
	// experts of EP rank r, in its local order, every expert exactly once (Placement is
	// then ignored). The number of lists must be the EP size.
	PlacementRanks [][]int `json:"expert_placement_ranks,omitempty"`
}

// DefaultChunk is VLLM_MOE_DP_CHUNK_SIZE's default.
const DefaultChunk = 256

// DefaultOverlapRows is what worker run --overlap (Runner.SetOverlap) and the cost model's
// layout ranking take where a GPU can overlap: passes whose chunks dispatch 512 rows or
// more each. Measured on 4 × H200 at 4096 tokens per rank with chunks of 256 (512 rows a
// chunk at world 2, 1024 at world 4), ms sequential / overlapped: world 4 mixtral 8.21 /
// 6.91, qwen3-30b-a3b 5.10 / 4.77, deepseek-v3 29.39 / 27.97; world 2 9.60 / 9.08,
// 5.56 / 4.95, 56.53 / 57.18 (docs/PERFORMANCE.md, session 6). Smaller chunks are not
// measured and stay sequential (and can be replayed from a CUDA graph).
const DefaultOverlapRows = 512

// OverlapLabel names an overlap setting as the tools print it: "overlap off" (0) or
// "overlap from N rows a chunk".
func OverlapLabel(rows int) string {
	if rows <= 0 {
		return "overlap off"
	}
	return fmt.Sprintf("overlap from %d rows a chunk", rows)
}

// ErrConfig marks an invalid layer config.
var ErrConfig = errors.New("invalid MoE config")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// Validate checks the layer on its own (the layout is checked by Plan).
func (c Config) Validate() error {
	switch {
	case c.Hidden < 1:
		return configErr("hidden_size %d: expected at least 1", c.Hidden)
	case c.Intermediate < 1:
		return configErr("moe_intermediate_size %d: expected at least 1", c.Intermediate)
	case c.Experts < 1:
		return configErr("num_experts %d: expected at least 1", c.Experts)
	case c.TopK < 1:
		return configErr("num_experts_per_tok %d: expected at least 1", c.TopK)
	case c.TopK > c.Experts:
		return configErr("top-k %d is larger than the %d experts", c.TopK, c.Experts)
	case c.ExpertGroups < 0 || c.TopKGroup < 0:
		return configErr("n_group %d and topk_group %d: expected 0 or more", c.ExpertGroups, c.TopKGroup)
	case c.ExpertGroups > 1 && c.Experts%c.ExpertGroups != 0:
		return configErr("n_group %d does not divide the %d experts", c.ExpertGroups, c.Experts)
	case c.ExpertGroups > 1 && (c.TopKGroup < 1 || c.TopKGroup > c.ExpertGroups):
		return configErr("topk_group %d: expected 1 to n_group %d", c.TopKGroup, c.ExpertGroups)
	case c.ExpertGroups > 1 && c.TopK > c.TopKGroup*(c.Experts/c.ExpertGroups):
		return configErr("top-k %d is larger than the %d experts in topk_group %d groups", c.TopK, c.TopKGroup*(c.Experts/c.ExpertGroups), c.TopKGroup)
	case c.RoutedScaling < 0 || math.IsNaN(c.RoutedScaling) || math.IsInf(c.RoutedScaling, 0):
		return configErr("routed_scaling_factor %v: expected a positive number", c.RoutedScaling)
	case c.SharedIntermediate < 0:
		return configErr("shared_intermediate_size %d: expected 0 or more", c.SharedIntermediate)
	case c.Latent < 0:
		return configErr("latent_size %d: expected 0 or more", c.Latent)
	case c.PadTo < 0:
		return configErr("pad_hidden_to %d: expected 0 or more", c.PadTo)
	case c.WeightOnInput && c.TopK != 1:
		return configErr("apply_router_weight_on_input needs num_experts_per_tok 1, not %d", c.TopK)
	case c.Chunk < 0:
		return configErr("chunk_size %d: expected at least 1", c.Chunk)
	}
	if _, err := c.ActivationKind(); err != nil {
		return err
	}
	if _, err := c.ElementType(); err != nil {
		return err
	}
	if c.PlacementRanks != nil {
		if err := rank.ValidateExplicit(c.Experts, len(c.PlacementRanks), c.PlacementRanks); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	if _, err := c.PlacementKind(); err != nil {
		return err
	}
	switch c.Arch {
	case "", "mixtral", "qwen3_moe", "deepseek_v3":
	default:
		return configErr("arch %q: expected mixtral, qwen3_moe or deepseek_v3", c.Arch)
	}
	rc, err := c.RouterConfig(nil)
	if err != nil {
		return err
	}
	if err := rc.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// ActivationKind parses Activation.
func (c Config) ActivationKind() (Activation, error) {
	switch c.Activation {
	case "silu", "":
		return SiLU, nil
	case "gelu":
		return GELU, nil
	}
	return 0, configErr("hidden_act %q: expected silu or gelu", c.Activation)
}

// ElementType parses DType.
func (c Config) ElementType() (dtype.DType, error) {
	switch c.DType {
	case "bf16", "bfloat16", "":
		return dtype.BFloat16, nil
	case "float32", "fp32":
		return dtype.Float32, nil
	}
	return 0, configErr("dtype %q: expected bf16 or float32", c.DType)
}

// PlacementKind parses Placement (default linear).
func (c Config) PlacementKind() (rank.Placement, error) {
	if c.Placement == "" {
		return rank.Linear, nil
	}
	p, err := rank.ParsePlacement(c.Placement)
	if err != nil {
		return 0, fmt.Errorf("%w: expert_placement: %w", ErrConfig, err)
	}
	return p, nil
}

// ChunkRows is the chunk size in rows per rank.
func (c Config) ChunkRows() int {
	if c.Chunk == 0 {
		return DefaultChunk
	}
	return c.Chunk
}

// Scale is the routed scaling factor (1 when unset).
func (c Config) Scale() float64 {
	if c.RoutedScaling == 0 {
		return 1
	}
	return c.RoutedScaling
}

// ExpertHidden is the width of the experts' input before padding: the latent size for a
// latent MoE, else the hidden size.
func (c Config) ExpertHidden() int {
	if c.Latent > 0 {
		return c.Latent
	}
	return c.Hidden
}

// PaddedHidden is vLLM's moe_config.hidden_dim: ExpertHidden rounded up to PadTo.
func (c Config) PaddedHidden() int {
	h := c.ExpertHidden()
	if c.PadTo > 1 {
		h = (h + c.PadTo - 1) / c.PadTo * c.PadTo
	}
	return h
}

// RouterConfig is the router of this layer. The routed scaling factor is applied to the
// fused output by the runner (G3: models pass apply_routed_scale_to_output, and the router
// gets 1), so the router never scales.
func (c Config) RouterConfig(bias []float32) (router.Config, error) {
	s, err := router.ParseScoring(orDefault(c.Scoring, "softmax"))
	if err != nil {
		return router.Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return router.Config{
		NumExperts: c.Experts, TopK: c.TopK, Scoring: s, Renormalize: c.Renormalize,
		NumExpertGroup: c.ExpertGroups, TopKGroup: c.TopKGroup, UseGroupedTopK: c.ExpertGroups > 1,
		Bias: bias, RoutedScalingFactor: 1,
	}, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Presets are the named layers of `--preset`. The real shapes come from the Hugging Face
// configs (spec §8 table); the tiny ones are small enough for CPU tests.
var presets = map[string]Config{
	"tiny": {Arch: "mixtral", Hidden: 64, Intermediate: 96, Experts: 8, TopK: 2, Scoring: "softmax",
		Renormalize: true, Activation: "silu", DType: "bf16"},
	"tiny-deepseek": {Arch: "deepseek_v3", Hidden: 64, Intermediate: 48, Experts: 16, TopK: 4, Scoring: "sigmoid",
		Renormalize: true, ExpertGroups: 4, TopKGroup: 2, ScoreBias: true, RoutedScaling: 2.5, Activation: "silu",
		SharedIntermediate: 48, DType: "bf16"},
	"tiny-latent": {Arch: "qwen3_moe", Hidden: 96, Intermediate: 64, Experts: 8, TopK: 2, Scoring: "softmax",
		Renormalize: true, Activation: "silu", Latent: 40, PadTo: 16, SharedIntermediate: 64, DType: "bf16"},
	"mixtral": {Arch: "mixtral", Hidden: 4096, Intermediate: 14336, Experts: 8, TopK: 2, Scoring: "softmax",
		Renormalize: true, Activation: "silu", DType: "bf16"},
	"qwen3-30b-a3b": {Arch: "qwen3_moe", Hidden: 2048, Intermediate: 768, Experts: 128, TopK: 8, Scoring: "softmax",
		Renormalize: true, Activation: "silu", DType: "bf16"},
	// DeepSeek-V2-Lite: 64 routed experts, 6 per token, 2 shared, softmax, no grouping
	// (n_group 1), routed_scaling_factor 1, no renormalisation (norm_topk_prob false).
	"deepseek-v2-lite": {Arch: "deepseek_v3", Hidden: 2048, Intermediate: 1408, Experts: 64, TopK: 6, Scoring: "softmax",
		Activation: "silu", SharedIntermediate: 2 * 1408, DType: "bf16"},
	"deepseek-v3": {Arch: "deepseek_v3", Hidden: 7168, Intermediate: 2048, Experts: 256, TopK: 8, Scoring: "sigmoid",
		Renormalize: true, ExpertGroups: 8, TopKGroup: 4, ScoreBias: true, RoutedScaling: 2.5, Activation: "silu",
		SharedIntermediate: 2048, DType: "bf16"},
}

// Preset returns the named layer.
func Preset(name string) (Config, error) {
	c, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown preset %q: expected one of %s", name, strings.Join(PresetNames(), ", "))
	}
	c.Name = name
	return c, nil
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	var names []string
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LoadConfig reads a layer config from a JSON file. Unknown fields are errors (a typo must
// not silently become a default), and so is anything after the object.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("config %s: not a valid layer config (JSON): %w", path, err)
	}
	if dec.More() {
		return Config{}, fmt.Errorf("config %s: more than one JSON value", path)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if c.Name == "" {
		c.Name = strings.TrimSuffix(path[strings.LastIndexByte(path, '/')+1:], ".json")
	}
	return c, nil
}
