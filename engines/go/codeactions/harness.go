package codeactions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"codeactions/internal/wire"
)

// maxStack is the largest stack one goroutine of an action may grow.
const maxStack = 64 << 20

// Main runs an action's Run once for the job on stdin and exits. The build generates the
// action's func main, which calls it; actions never call it themselves.
//
// Frames (engines/PROTOCOL.md) go to a private descriptor: the one the launcher passes
// ("frame_fd" in the job), or else a close-on-exec duplicate of fd 1, after which fd 1 and
// fd 2 point at a pipe drained here and sent back as the stdout frame. Either way, nothing
// the user code prints can be read as a frame.
//
// In a resident environment (engines/PROTOCOL.md, "Resident mode") the process serves many
// runs instead: see resident.go.
func Main(run func(engine *Engine) error) {
	if residentMode {
		os.Exit(serveResident(run))
	}
	os.Exit(serve(run))
}

func serve(run func(*Engine) error) int {
	raw, readErr := io.ReadAll(os.Stdin)
	job, jobErr := parseJob(raw)
	if readErr != nil {
		jobErr = readErr
	}

	var out *os.File
	standalone := true
	if fd, ok := intField(job["frame_fd"]); ok && fd > 2 {
		if out = wire.OpenFile(fd, "frames"); out != nil {
			syscall.CloseOnExec(fd)
			standalone = false
		}
	}
	if standalone {
		out = privateStdout()
	}
	frames := wire.NewWriter(out)
	if jobErr != nil {
		frames.SendFinal(wire.EndFrame{T: "end", Status: "failed", Error: "invalid job: " + jobErr.Error()})
		return 2
	}

	redirectStdin()
	var capture *wire.Capture
	if standalone {
		capture = captureOutput()
	}
	// A runaway recursion fails as "fatal error: stack overflow" rather than exhausting the
	// sandbox's memory (the default limit is 1 GB per goroutine).
	debug.SetMaxStack(maxStack)
	status, _ := execute(run, job, frames, capture, nil)
	return status
}

// execute runs one job with a fresh Engine and writes its frames, the end frame last; it
// gives the one-shot exit status (0 completed, 1 failed) and whether Run panicked (or called
// runtime.Goexit), which leaves the process in no state to serve another run (a lock held,
// an invariant half-kept). beforeEnd, when not nil, is called right before the end frame
// (resident mode: resident.go) with that last answer.
func execute(run func(*Engine) error, job map[string]json.RawMessage, frames *wire.Writer,
	capture *wire.Capture, beforeEnd func(panicked bool)) (int, bool) {
	maxChars := LogContentMax
	if limits, ok := objectField(job["limits"]); ok {
		if n, ok := intField(limits["log_content_max"]); ok && n > 0 {
			maxChars = n
		}
	}
	logger := &Logger{maxChars: maxChars, send: func(level, content string) {
		frames.Send(wire.LogFrame{T: "log", Level: level, Content: content})
	}}
	legacy := false
	if compat, ok := stringField(job["compat"]); ok && compat == "legacy" {
		legacy = true
	}
	// Each leniency legacy mode applies is told once per run, in a debug log.
	var noted sync.Map
	note := func(message string) {
		if _, seen := noted.LoadOrStore(message, true); !seen {
			logger.Debug(message)
		}
	}
	params := Params{values: parseParams(job["params"])}
	header := newHeader(parseHeaders(job["headers"]))
	body := ""
	if s, ok := stringField(job["body"]); ok {
		body = strings.TrimSpace(s)
	}
	engine := &Engine{
		Params:  params,
		Body:    body,
		Header:  header,
		Request: &Request{Params: params, Body: body, Header: header, Log: logger},
		Log:     logger,
		Result:  &Result{statusCode: 200, contentType: ContentText, legacy: legacy, note: note},
	}

	failure, panicked := call(run, engine)
	value, statusCode, contentType, setErr := engine.Result.snapshot()
	// Legacy mode: Run failed, yet the caller gets what it had set (an empty 200 when
	// nothing), as the old engine answered; the run stays failed.
	answered := legacy && failure != "" && setErr == nil
	if failure == "" && setErr != nil {
		failure = "invalid result: " + setErr.Error()
	}
	if failure != "" {
		frames.Send(wire.LogFrame{
			T: "log", Level: "error", Content: wire.Truncate("Action execution failed: "+failure, maxChars),
		})
	}
	if answered {
		note(fmt.Sprintf("the code failed after Run began: the caller still gets the result it "+
			"had set (status %d, %s); the run is recorded as failed (legacy mode)", statusCode, contentType))
	}
	if failure == "" || answered {
		frames.Send(wire.ResultFrame{T: "result", Value: value, StatusCode: statusCode, ContentType: contentType})
	}
	if capture != nil {
		if text := finishCapture(capture); text != "" || capture.Total() > 0 {
			frames.Send(wire.StdoutFrame{T: "stdout", Data: text, Total: capture.Total()})
		}
	}
	if beforeEnd != nil {
		beforeEnd(panicked)
	}
	if failure != "" {
		frames.SendFinal(wire.EndFrame{T: "end", Status: "failed", Error: wire.Truncate(failure, wire.StdoutMax)})
		return 1, panicked
	}
	frames.SendFinal(wire.EndFrame{T: "end", Status: "completed"})
	return 0, false
}

type runOutcome struct {
	failure  string
	panicked bool
}

// call runs Run in its own goroutine and gives the failure message, "" on success, and
// whether Run panicked (or called runtime.Goexit).
func call(run func(*Engine) error, engine *Engine) (string, bool) {
	done := make(chan runOutcome, 1)
	go func() {
		returned := false
		defer func() {
			if returned {
				return
			}
			r := recover()
			if r == nil {
				done <- runOutcome{"Run called runtime.Goexit", true}
				return
			}
			message := "panic: " + safeString(r)
			fmt.Fprintf(os.Stderr, "%s\n\n%s", printedPanic(message), debug.Stack())
			done <- runOutcome{message, true}
		}()
		err := run(engine)
		returned = true
		if err == nil {
			done <- runOutcome{}
			return
		}
		done <- runOutcome{failure: errorMessage(err)}
	}()
	result := <-done
	return result.failure, result.panicked
}

// panicPrintMax bounds the panic message printed above the stack: a huge panic value is the
// code's failure, not its output, so it must not reach the output cap (the Python and
// JavaScript engines cut an oversized traceback or stack the same way).
const panicPrintMax = 16 * 1024

func printedPanic(message string) string {
	if len(message) <= panicPrintMax {
		return message
	}
	return fmt.Sprintf("%s\n... (an oversized panic value of %d bytes: the message was cut)",
		wire.Truncate(message, panicPrintMax), len(message))
}

func errorMessage(err error) (message string) {
	defer func() {
		if recover() != nil {
			message = fmt.Sprintf("%T", err)
		}
	}()
	message = err.Error()
	if message == "" {
		message = fmt.Sprintf("%T", err)
	}
	return message
}

func safeString(v any) string {
	if err, ok := v.(error); ok {
		return errorMessage(err)
	}
	return fmt.Sprint(v) // fmt recovers from panics in String methods
}

// ----------------------------------------------------------------------------- descriptors

const fDupfdCloexec = 1030 // F_DUPFD_CLOEXEC

// privateStdout moves the frame channel off fd 1: a close-on-exec duplicate numbered >= 3.
func privateStdout() *os.File {
	fd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, 1, fDupfdCloexec, 3)
	if errno != 0 {
		// No spare descriptor: frames stay on fd 1 (and prints are not captured).
		return os.Stdout
	}
	return os.NewFile(fd, "frames")
}

func redirectStdin() {
	if null, err := os.Open(os.DevNull); err == nil {
		_ = syscall.Dup3(int(null.Fd()), 0, 0)
		null.Close()
	}
	os.Stdin = os.NewFile(0, "/dev/stdin")
}

// captureOutput points fd 1 and fd 2 at a pipe drained by a goroutine.
func captureOutput() *wire.Capture {
	r, w, err := os.Pipe()
	if err != nil {
		return nil
	}
	wfd := int(w.Fd())
	if syscall.Dup3(wfd, 1, 0) != nil || syscall.Dup3(wfd, 2, 0) != nil {
		r.Close()
		w.Close()
		return nil
	}
	w.Close()
	os.Stdout = os.NewFile(1, "/dev/stdout")
	os.Stderr = os.NewFile(2, "/dev/stderr")
	return wire.NewCapture(r)
}

// finishCapture closes our write ends of the capture pipe and gives what was printed.
func finishCapture(c *wire.Capture) string {
	if null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		_ = syscall.Dup3(int(null.Fd()), 1, 0)
		_ = syscall.Dup3(int(null.Fd()), 2, 0)
		null.Close()
	}
	// Processes the user code started may still hold the pipe open: do not wait for them.
	c.Wait(500 * time.Millisecond)
	return c.Text()
}

// ----------------------------------------------------------------------------- job

func parseJob(raw []byte) (map[string]json.RawMessage, error) {
	var job map[string]json.RawMessage
	if err := json.Unmarshal(raw, &job); err != nil {
		return nil, err
	}
	if job == nil {
		return nil, errors.New("job must be a JSON object")
	}
	return job, nil
}

func objectField(raw json.RawMessage) (map[string]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil || m == nil {
		return nil, false
	}
	return m, true
}

func stringField(raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil || raw[0] != '"' {
		return "", false
	}
	return s, true
}

func intField(raw json.RawMessage) (int, bool) {
	var n int
	if len(raw) == 0 || json.Unmarshal(raw, &n) != nil {
		return 0, false
	}
	return n, true
}

// text turns a JSON value into the string an action sees: strings as is, null as "",
// anything else as its JSON text.
func text(raw json.RawMessage) string {
	if s, ok := stringField(raw); ok {
		return s
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return ""
	}
	var compact bytes.Buffer
	if json.Compact(&compact, trimmed) == nil {
		return compact.String()
	}
	return string(trimmed)
}

func parseParams(raw json.RawMessage) map[string]string {
	out := map[string]string{}
	obj, ok := objectField(raw)
	if !ok {
		return out
	}
	for key, value := range obj {
		var list []json.RawMessage
		if json.Unmarshal(value, &list) == nil && bytes.HasPrefix(bytes.TrimSpace(value), []byte("[")) {
			if len(list) == 0 {
				out[key] = ""
			} else {
				out[key] = text(list[0])
			}
			continue
		}
		out[key] = text(value)
	}
	return out
}

// parseHeaders keeps the names in the order received (which spelling Get finds first).
func parseHeaders(raw json.RawMessage) ([]string, map[string][]string) {
	values := map[string][]string{}
	var order []string
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return order, values
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		name, _ := tok.(string)
		var value json.RawMessage
		if dec.Decode(&value) != nil {
			break
		}
		var list []json.RawMessage
		var vs []string
		if bytes.HasPrefix(bytes.TrimSpace(value), []byte("[")) && json.Unmarshal(value, &list) == nil {
			vs = make([]string, 0, len(list))
			for _, item := range list {
				vs = append(vs, text(item))
			}
		} else {
			vs = []string{text(value)}
		}
		if _, seen := values[name]; !seen {
			order = append(order, name)
		}
		values[name] = vs
	}
	return order, values
}
