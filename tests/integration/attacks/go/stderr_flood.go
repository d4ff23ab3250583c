package main

import (
	"syscall"

	"codeactions"
)

// Straight to fd 2, past os.Stderr: 8 MiB against a 2 MiB output cap.
func Run(engine *codeactions.Engine) error {
	chunk := make([]byte, 65536)
	for i := 0; i < 128; i++ {
		syscall.Write(2, chunk)
	}
	return engine.Result.Set("not stopped")
}
