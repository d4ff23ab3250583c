package main

import "codeactions"

func Run(engine *codeactions.Engine) error {
	return engine.Result.Set("ok")
}
