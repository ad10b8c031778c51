package rank

import (
	"errors"
	"testing"
)

func TestNewLayout(t *testing.T) {
	tests := []struct {
		name                   string
		world, tp, pcp, pp, dp int
		ep                     bool
		want                   Layout
	}{
		{"derive dp", 8, 2, 1, 1, 0, true, Layout{ExtDP: 1, DP: 4, PP: 1, PCP: 1, TP: 2, EP: true}},
		{"explicit dp", 8, 2, 2, 1, 2, false, Layout{ExtDP: 1, DP: 2, PP: 1, PCP: 2, TP: 2}},
		{"pp", 8, 2, 1, 2, 0, false, Layout{ExtDP: 1, DP: 2, PP: 2, PCP: 1, TP: 2}},
		{"single", 1, 1, 1, 1, 0, false, Layout{ExtDP: 1, DP: 1, PP: 1, PCP: 1, TP: 1}},
		{"tp only", 4, 4, 1, 1, 1, false, Layout{ExtDP: 1, DP: 1, PP: 1, PCP: 1, TP: 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewLayout(tc.world, tc.tp, tc.pcp, tc.pp, tc.dp, tc.ep)
			if err != nil {
				t.Fatalf("NewLayout(%d, %d, %d, %d, %d, %t): %v", tc.world, tc.tp, tc.pcp, tc.pp, tc.dp, tc.ep, err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if got.World() != tc.world {
				t.Errorf("World() = %d, want %d", got.World(), tc.world)
			}
		})
	}
}

func TestNewLayoutErrors(t *testing.T) {
	tests := []struct {
		name                   string
		world, tp, pcp, pp, dp int
		want                   string
	}{
		{"np not multiple", 3, 2, 1, 1, 0, "np 3 is not a multiple of tp·pcp·pp = 2"},
		{"np not multiple with dp", 3, 2, 1, 1, 1, "np 3 is not a multiple of tp·pcp·pp = 2"},
		{"np not multiple of product", 6, 2, 2, 1, 0, "np 6 is not a multiple of tp·pcp·pp = 4"},
		{"dp mismatch", 8, 2, 1, 1, 2, "np 8 does not match dp·pp·pcp·tp = 2·1·1·2 = 4"},
		{"dp mismatch all axes", 8, 2, 2, 2, 2, "np 8 does not match dp·pp·pcp·tp = 2·2·2·2 = 16"},
		{"zero world", 0, 1, 1, 1, 0, "np 0 must be >= 1"},
		{"negative world", -4, 1, 1, 1, 0, "np -4 must be >= 1"},
		{"zero tp", 4, 0, 1, 1, 0, "tp 0 must be >= 1"},
		{"negative tp", 4, -2, 1, 1, 0, "tp -2 must be >= 1"},
		{"zero pcp", 4, 1, 0, 1, 0, "pcp 0 must be >= 1"},
		{"zero pp", 4, 1, 1, 0, 0, "pp 0 must be >= 1"},
		{"negative dp", 4, 1, 1, 1, -1, "dp -1 must be >= 1 (or 0 to derive it from np)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewLayout(tc.world, tc.tp, tc.pcp, tc.pp, tc.dp, false)
			if err == nil {
				t.Fatalf("NewLayout(%d, %d, %d, %d, %d): no error, want %q", tc.world, tc.tp, tc.pcp, tc.pp, tc.dp, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
		})
	}
}

func TestLayoutString(t *testing.T) {
	tests := []struct {
		l    Layout
		want string
	}{
		{Layout{1, 4, 1, 1, 2, true}, "world 8 = dp 4 × tp 2 (ep)"},
		{Layout{1, 2, 1, 2, 2, false}, "world 8 = dp 2 × pcp 2 × tp 2"},
		{Layout{1, 2, 2, 1, 2, true}, "world 8 = dp 2 × pp 2 × tp 2 (ep)"},
		{Layout{2, 2, 1, 1, 1, false}, "world 4 = ext-dp 2 × dp 2"},
		{Layout{1, 1, 1, 1, 8, false}, "world 8 = tp 8"},
		{Layout{1, 1, 1, 1, 1, false}, "world 1"},
		{Layout{1, 1, 1, 1, 1, true}, "world 1 (ep)"},
		{Layout{1, 0, 1, 1, 2, true}, "invalid layout {ext-dp 1, dp 0, pp 1, pcp 1, tp 2, ep true}"},
	}
	for _, tc := range tests {
		if got := tc.l.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.l, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		l    Layout
		want string // "" = valid
	}{
		{Layout{1, 1, 1, 1, 1, false}, ""},
		{Layout{2, 2, 2, 2, 2, true}, ""},
		{Layout{}, "layout invalid layout {ext-dp 0, dp 0, pp 0, pcp 0, tp 0, ep false}: ext-dp 0 must be >= 1"},
		{Layout{1, 1, 1, 1, 0, false}, "layout invalid layout {ext-dp 1, dp 1, pp 1, pcp 1, tp 0, ep false}: tp 0 must be >= 1"},
		{Layout{1, 1, -1, 1, 1, false}, "layout invalid layout {ext-dp 1, dp 1, pp -1, pcp 1, tp 1, ep false}: pp -1 must be >= 1"},
	}
	for _, tc := range tests {
		err := tc.l.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v.Validate() = %v, want nil", tc.l, err)
		case tc.want != "" && (err == nil || err.Error() != tc.want || !errors.Is(err, ErrInvalid)):
			t.Errorf("%+v.Validate() = %v, want %q", tc.l, err, tc.want)
		}
	}
}

// TestOutOfContract checks the documented sentinels: no method panics on an invalid layout or
// an out-of-range rank.
func TestOutOfContract(t *testing.T) {
	none := Coord{-1, -1, -1, -1, -1}
	good := Layout{1, 2, 1, 1, 2, true}
	bad := Layout{1, 0, 1, 1, 2, true}
	for _, tc := range []struct {
		l    Layout
		rank int
	}{{good, -1}, {good, 4}, {bad, 0}, {Layout{}, 0}} {
		if err := tc.l.CheckRank(tc.rank); !errors.Is(err, ErrInvalid) {
			t.Errorf("%v CheckRank(%d) = %v, want ErrInvalid", tc.l, tc.rank, err)
		}
		if got := tc.l.Coord(tc.rank); got != none {
			t.Errorf("%v Coord(%d) = %+v, want %+v", tc.l, tc.rank, got, none)
		}
		if got := tc.l.MoE(tc.rank); got != (MoEParallel{}) {
			t.Errorf("%v MoE(%d) = %+v, want zero", tc.l, tc.rank, got)
		}
		for _, k := range AllGroupKinds {
			if i, p := tc.l.GroupOf(k, tc.rank); i != -1 || p != -1 {
				t.Errorf("%v GroupOf(%v, %d) = (%d, %d), want (-1, -1)", tc.l, k, tc.rank, i, p)
			}
		}
	}
	for _, c := range []Coord{{0, 2, 0, 0, 0}, {0, 0, 0, 0, -1}, {1, 0, 0, 0, 0}, {0, 0, 1, 0, 0}} {
		if got := good.Rank(c); got != -1 {
			t.Errorf("%v Rank(%+v) = %d, want -1", good, c, got)
		}
	}
	if got := bad.Rank(Coord{}); got != -1 {
		t.Errorf("%v Rank(0) = %d, want -1", bad, got)
	}
	for _, k := range AllGroupKinds {
		if g := bad.Groups(k); g != nil {
			t.Errorf("%v Groups(%v) = %v, want nil", bad, k, g)
		}
	}
	if g := good.Groups(GroupKind(9)); g != nil {
		t.Errorf("Groups(GroupKind(9)) = %v, want nil", g)
	}
	if i, p := good.GroupOf(GroupKind(-1), 0); i != -1 || p != -1 {
		t.Errorf("GroupOf(GroupKind(-1), 0) = (%d, %d), want (-1, -1)", i, p)
	}
}

func TestGroupKindString(t *testing.T) {
	want := []string{"tp", "pcp", "pp", "dp", "ep"}
	if len(AllGroupKinds) != len(want) {
		t.Fatalf("AllGroupKinds = %v", AllGroupKinds)
	}
	for i, k := range AllGroupKinds {
		if k.String() != want[i] {
			t.Errorf("AllGroupKinds[%d] = %q, want %q", i, k, want[i])
		}
	}
	if s := GroupKind(7).String(); s != "GroupKind(7)" {
		t.Errorf("GroupKind(7).String() = %q", s)
	}
}
