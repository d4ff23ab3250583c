package main

import (
	"os/exec"

	"codeactions"
)

func Run(engine *codeactions.Engine) error {
	if err := exec.Command("sleep", "300").Start(); err != nil {
		return err
	}
	return engine.Result.Set("parent done")
}
