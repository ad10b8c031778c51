package worker

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestPlaceFromEnv(t *testing.T) {
	launch := map[string]string{
		"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4",
		"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "4242", "MOERUN_TOKEN": "t0k",
		"MOERUN_TP": "2", "MOERUN_DP": "2", "MOERUN_PCP": "1", "MOERUN_PP": "1", "MOERUN_EP": "1", "MOERUN_TIMEOUT": "7s",
	}
	p, err := PlaceFromEnv(env(launch))
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != "launch" || p.Rank != 3 || p.World != 4 || p.LocalRank != 3 || p.LocalWorld != 4 ||
		p.StoreAddr != "127.0.0.1:4242" || p.Token != "t0k" || p.HostStore || p.Timeout != 7*time.Second ||
		p.Layout.TP != 2 || p.Layout.DP != 2 || !p.Layout.EP {
		t.Errorf("launcher environment: got %+v", p)
	}

	mpi := map[string]string{"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
		"OMPI_COMM_WORLD_LOCAL_SIZE": "2", "MOERUN_TOKEN": "x"}
	p, err = PlaceFromEnv(env(mpi))
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != "mpirun" || p.Rank != 1 || p.World != 2 || !p.HostStore || p.StoreAddr != "127.0.0.1:29500" || p.Layout.DP != 2 || p.Timeout != DefaultTimeout {
		t.Errorf("mpirun environment: got %+v", p)
	}

	slurm := map[string]string{"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_TASKS_PER_NODE": "4(x2)",
		"MASTER_ADDR": "node1", "MASTER_PORT": "1234", "MOERUN_TOKEN": "x", "MOERUN_TP": "4"}
	p, err = PlaceFromEnv(env(slurm))
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != "slurm" || p.Rank != 5 || p.LocalRank != 1 || p.LocalWorld != 4 || p.StoreAddr != "node1:1234" || p.Layout.TP != 4 || p.Layout.DP != 2 {
		t.Errorf("slurm environment: got %+v", p)
	}

	p, err = PlaceFromEnv(env(nil))
	if err != nil || p.Source != "alone" || p.World != 1 || p.StoreAddr != "" {
		t.Errorf("empty environment: got %+v, %v", p, err)
	}
}

func TestPlaceFromEnvErrors(t *testing.T) {
	base := func() map[string]string {
		return map[string]string{"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", "MOERUN_TOKEN": "t"}
	}
	cases := []struct {
		name string
		edit func(m map[string]string)
		want string
	}{
		{"rank without world", func(m map[string]string) { delete(m, "WORLD_SIZE") }, "WORLD_SIZE is not set"},
		{"world without rank", func(m map[string]string) { delete(m, "RANK") }, "RANK is not set"},
		{"rank too large", func(m map[string]string) { m["RANK"] = "2" }, "RANK=2 is not below WORLD_SIZE=2"},
		{"rank not a number", func(m map[string]string) { m["RANK"] = "one" }, `RANK="one": expected an integer`},
		{"no store", func(m map[string]string) { delete(m, "MASTER_PORT") }, "MASTER_ADDR and MASTER_PORT must name"},
		{"bad port", func(m map[string]string) { m["MASTER_PORT"] = "99999" }, `MASTER_PORT="99999": expected a TCP port`},
		{"no token", func(m map[string]string) { delete(m, "MOERUN_TOKEN") }, "MOERUN_TOKEN is not set"},
		{"bad timeout", func(m map[string]string) { m["MOERUN_TIMEOUT"] = "soon" }, `MOERUN_TIMEOUT="soon"`},
		{"bad ep", func(m map[string]string) { m["MOERUN_EP"] = "yes" }, `MOERUN_EP="yes": expected 1 or 0`},
		{"layout mismatch", func(m map[string]string) { m["MOERUN_TP"] = "4" }, "np 2 is not a multiple of tp·pcp·pp = 4"},
		{"zero tp", func(m map[string]string) { m["MOERUN_TP"] = "0" }, `MOERUN_TP="0": expected an integer of at least 1`},
	}
	for _, c := range cases {
		m := base()
		c.edit(m)
		_, err := PlaceFromEnv(env(m))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
	if _, err := PlaceFromEnv(env(map[string]string{"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "MOERUN_TOKEN": "x"})); err == nil || !strings.Contains(err.Error(), "MASTER_ADDR is not set") {
		t.Errorf("mpirun on several hosts without MASTER_ADDR: %v", err)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"8": 8, "1K": 1024, "64k": 64 << 10, "16M": 16 << 20, "1G": 1 << 30, "2MB": 2 << 20} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "K", "1T", "abc"} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) succeeded", in)
		}
	}
}
