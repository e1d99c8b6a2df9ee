package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: any bytes given as a config either load or fail with
// Problems, each placed at a line and column, and never panic.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/full.hcl", "../config.hcl"} {
		if src, err := os.ReadFile(name); err == nil {
			f.Add(src)
		}
	}
	for _, s := range []string{
		"",
		"listen = \"127.0.0.1:8080\"\napp \"web\" { command = [\"x\", \"{port}\"] }\n",
		"app \"web\" { command = [\"x\", \"{port}\", \"{socket}\"] }\n",
		"app \"web\" {\n command = [\"x\"]\n instances = 0\n autoscale { min = 3 max = 1 }\n}\n",
		"admin { token = \"short\" }\n",
		"proxy { buffering { request_memory = \"1ZiB\" } }\n",
		"app \"a\" {\n command = [\"x\", \"{port}\"]\n recycle { max_memory = \"-1MiB\" max_age = \"0s\" }\n}\n",
		"app { }\n\"\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := Parse(src, filepath.Join(dir, "config.hcl"))
		if err == nil {
			if cfg == nil {
				t.Fatal("no config and no error")
			}
			return
		}
		var ps Problems
		if !errors.As(err, &ps) || len(ps) == 0 {
			t.Fatalf("error %T %q is not a list of problems", err, err)
		}
		for _, p := range ps {
			if p.Line < 1 || p.Column < 1 || p.File == "" {
				t.Fatalf("problem without a position: %+v", p)
			}
		}
	})
}
