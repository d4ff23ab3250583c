package main

import (
	"os"
	"os/exec"

	"codeactions"
)

// A child writing to the stderr it inherited: 8 MiB against a 2 MiB output cap.
func Run(engine *codeactions.Engine) error {
	cmd := exec.Command("sh", "-c", "head -c 8388608 /dev/zero >&2")
	cmd.Stderr = os.Stderr
	cmd.Run()
	return engine.Result.Set("not stopped")
}
