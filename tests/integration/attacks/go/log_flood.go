package main

import "codeactions"

func Run(engine *codeactions.Engine) error {
	for i := 0; i < 5000; i++ {
		engine.Log.Info(i)
	}
	return nil
}
