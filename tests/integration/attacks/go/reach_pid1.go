package main

import (
	"os"
	"strings"

	"codeactions"
)

// PID 1 (the init of a one-run container, the supervisor of a warm environment) runs as the
// run's uid; undumpable, none of it is the run's to read.
func Run(engine *codeactions.Engine) error {
	probes := map[string]func(string) error{
		"/proc/1/environ": func(p string) error { _, err := os.ReadFile(p); return err },
		"/proc/1/fd":      func(p string) error { _, err := os.ReadDir(p); return err },
		"/proc/1/mem": func(p string) error {
			f, err := os.Open(p)
			if err == nil {
				f.Close()
			}
			return err
		},
		"/proc/1/maps": func(p string) error { _, err := os.ReadFile(p); return err },
		"/proc/1/root": func(p string) error { _, err := os.ReadDir(p); return err },
	}
	reached := []string{}
	for path, probe := range probes {
		if probe(path) == nil {
			reached = append(reached, path)
		}
	}
	if len(reached) > 0 {
		return engine.Result.Set("reached " + strings.Join(reached, " "))
	}
	return engine.Result.Set("pid 1 out of reach")
}
