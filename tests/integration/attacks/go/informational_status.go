package main

import "codeactions"

// A 1xx is no final answer: the caller would get an empty reply.
func Run(engine *codeactions.Engine) error {
	return engine.Result.Set("switching", codeactions.WithStatusCode(101))
}
