package main

import (
	"os"

	"codeactions"
)

func Run(engine *codeactions.Engine) error {
	f, err := os.Create("/tmp/fill")
	if err != nil {
		return err
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			return err
		}
	}
}
