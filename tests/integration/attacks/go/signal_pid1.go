package main

import (
	"fmt"
	"syscall"

	"codeactions"
)

// Every signal number at PID 1: a warm environment's supervisor must shrug them all off.
func Run(engine *codeactions.Engine) error {
	var refused []string
	for n := 1; n <= 64; n++ {
		if err := syscall.Kill(1, syscall.Signal(n)); err != nil {
			refused = append(refused, fmt.Sprintf("%d: %v", n, err))
		}
	}
	if len(refused) > 0 {
		return engine.Result.Set(fmt.Sprintf("refused %v", refused))
	}
	return engine.Result.Set("sent")
}
