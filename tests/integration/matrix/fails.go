package main

import (
	"errors"

	"codeactions"
)

func Run(engine *codeactions.Engine) error {
	engine.Log.Info("before")
	return errors.New("boom")
}
