package main

import (
	"fmt"
	"strings"

	"codeactions"
)

func Run(engine *codeactions.Engine) error {
	line := strings.Repeat("A", 1023)
	for i := 0; i < 8*1024; i++ {
		fmt.Println(line)
	}
	return nil
}
