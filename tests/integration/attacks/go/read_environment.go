package main

import (
	"os"

	"codeactions"
)

func Run(engine *codeactions.Engine) error {
	seen := map[string]string{}
	for _, kv := range os.Environ() {
		seen[kv] = ""
	}
	for _, path := range []string{"/proc/1/environ", "/proc/self/environ"} {
		data, err := os.ReadFile(path)
		if err != nil {
			seen[path] = err.Error()
		} else {
			seen[path] = string(data)
		}
	}
	return engine.Result.Set(seen, codeactions.WithContentType("json"))
}
