package main

import "codeactions"

func Run(engine *codeactions.Engine) error {
	for {
	}
}
