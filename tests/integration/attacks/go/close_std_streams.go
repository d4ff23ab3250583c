package main

import (
	"os"
	"syscall"

	"codeactions"
)

func Run(engine *codeactions.Engine) error {
	os.Stdout.Close()
	for _, fd := range []int{0, 1, 2} {
		syscall.Close(fd)
	}
	return engine.Result.Set("still here")
}
