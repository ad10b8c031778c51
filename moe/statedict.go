package moe

import "fmt"

// Param is one parameter of the unsharded layer under the name and shape that the
// matching transformers block's state_dict() uses, with a way to generate its values
// (row-major, rounded to the layer's dtype).
type Param struct {
	Name  string
	Shape []int
	// Float32 params (the DeepSeek score-correction bias) stay float32 in any layer.
	Float32 bool
	Fill    func(dst []float32)
}

// Elements is the number of values of p.
func (p Param) Elements() int {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// StateDict lists the layer's parameters as transformers names them: MixtralSparseMoeBlock
// (gate, experts.N.w1/w2/w3), Qwen3MoeSparseMoeBlock (gate, experts.N.gate_proj/up_proj/
// down_proj) or DeepseekV3MoE (the same plus gate.e_score_correction_bias and
// shared_experts.*). Parts that block lacks keep DeepSeek's names (shared_experts.*) or
// ours (latent_in_proj, latent_out_proj). Weights are unpadded.
func StateDict(cfg Config, seed uint64) ([]Param, error) {
	full, err := unsharded(cfg)
	if err != nil {
		return nil, err
	}
	dt, _ := cfg.ElementType()
	h, i, he := cfg.Hidden, cfg.Intermediate, cfg.ExpertHidden()
	block := func(g *Gen, first, rows, cols int) func([]float32) {
		return func(dst []float32) {
			for r := 0; r < rows; r++ {
				for c := 0; c < cols; c++ {
					dst[r*cols+c] = round(g.At(first+r, c), dt)
				}
			}
		}
	}
	var ps []Param
	ps = append(ps, Param{Name: "gate.weight", Shape: []int{cfg.Experts, h}, Fill: block(RouterGen(seed, h), 0, cfg.Experts, h)})
	if cfg.ScoreBias {
		ps = append(ps, Param{Name: "gate.e_score_correction_bias", Shape: []int{cfg.Experts}, Float32: true, Fill: func(dst []float32) {
			copy(dst, Bias(cfg, seed))
		}})
	}
	names := [3]string{"gate_proj", "up_proj", "down_proj"}
	if cfg.Arch == "mixtral" {
		names = [3]string{"w1", "w3", "w2"}
	}
	w13, w2 := full.w13Gen(seed), full.w2Gen(seed)
	hp := cfg.PaddedHidden()
	for e := 0; e < cfg.Experts; e++ {
		p := fmt.Sprintf("experts.%d.", e)
		ps = append(ps,
			Param{Name: p + names[0] + ".weight", Shape: []int{i, he}, Fill: block(w13, e*2*i, i, he)},
			Param{Name: p + names[1] + ".weight", Shape: []int{i, he}, Fill: block(w13, e*2*i+i, i, he)},
			Param{Name: p + names[2] + ".weight", Shape: []int{he, i}, Fill: block(w2, e*hp, he, i)})
	}
	if si := cfg.SharedIntermediate; si > 0 {
		g13, g2 := full.sharedW13Gen(seed), full.sharedW2Gen(seed)
		ps = append(ps,
			Param{Name: "shared_experts.gate_proj.weight", Shape: []int{si, h}, Fill: block(g13, 0, si, h)},
			Param{Name: "shared_experts.up_proj.weight", Shape: []int{si, h}, Fill: block(g13, si, si, h)},
			Param{Name: "shared_experts.down_proj.weight", Shape: []int{h, si}, Fill: block(g2, 0, h, si)})
	}
	if l := cfg.Latent; l > 0 {
		ps = append(ps,
			Param{Name: "latent_in_proj.weight", Shape: []int{l, h}, Fill: block(latentInGen(seed, cfg), 0, l, h)},
			Param{Name: "latent_out_proj.weight", Shape: []int{h, l}, Fill: block(latentOutGen(seed, cfg), 0, h, l)})
	}
	return ps, nil
}
