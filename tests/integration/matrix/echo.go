package main

import "codeactions"

func Run(engine *codeactions.Engine) error {
	engine.Log.Debug("first")
	engine.Log.Info("second")
	engine.Log.Error("third")
	engine.Result.Set("replaced")
	return engine.Result.Set(map[string]any{
		"name":    engine.Params.Get("name"),
		"missing": engine.Params.Get("nope"),
		"body":    engine.Body,
		"agent":   engine.Header.Get("User-Agent"),
		"absent":  engine.Header.Get("X-Absent"),
	}, codeactions.WithStatusCode(207), codeactions.WithContentType("json"))
}
