package main

import (
	"os"

	"codeactions"
)

func Run(engine *codeactions.Engine) error {
	return os.WriteFile("/usr/evil", []byte("x"), 0o644)
}
