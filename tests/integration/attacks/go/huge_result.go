package main

import (
	"strings"

	"codeactions"
)

func Run(engine *codeactions.Engine) error {
	return engine.Result.Set(strings.Repeat("x", 3<<20))
}
