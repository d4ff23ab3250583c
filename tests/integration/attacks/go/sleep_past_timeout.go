package main

import (
	"time"

	"codeactions"
)

func Run(engine *codeactions.Engine) error {
	time.Sleep(60 * time.Second)
	return nil
}
