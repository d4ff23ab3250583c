package main

import (
	"os"

	"codeactions"
)

func Run(engine *codeactions.Engine) error {
	os.Stdout.Write([]byte{0xff, 0xfe, 0x00, 0x80})
	engine.Log.Info("nul\x00inside")
	return engine.Result.Set("bin\xff")
}
