package main

import (
	"syscall"

	"codeactions"
)

// Half a frame on the engine's frame channel (fd 3), then gone: the caller must learn at
// once, not at the timeout.
func Run(engine *codeactions.Engine) error {
	torn := append([]byte{0, 0, 3, 232}, []byte(`{"t": "log", "level": "info", "content": "torn`)...)
	syscall.Write(3, torn)
	syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
	return nil
}
