// Command launcher is the Go engine image's entrypoint (see engines/go/README.md).
//
//	launcher           run: job on stdin with the compiled action in "artifact" → frames
//	launcher compile   compile: {"source": "..."} on stdin → an artifact frame or an error
//	launcher warmup    at image build time: fill the build cache the compile mode reads
//	launcher serve     a warm environment's supervisor (serve.go, engines/PROTOCOL.md)
//
// Run mode puts the artifact in an in-memory file (memfd: /tmp is noexec) and runs it as a child: the job (without the
// artifact) on its stdin, a private pipe for its frames on fd 3, and fd 1 and fd 2 on a
// capture pipe. The launcher forwards the child's frames whole as they come, then adds the
// stdout frame (what the child printed, at most 64 KiB) and the end frame. When the child
// dies without an end frame — a panic in another goroutine, a fatal runtime error such as a
// stack overflow, os.Exit — the launcher reports that instead, with the runtime's message.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"codeactions/internal/wire"
)

const (
	childFrameFD  = 3
	logContentMax = 8000
	// Frames up to this size are read whole (to find the end frame); bigger ones stream.
	inspectMax = 1 << 20

	buildDir   = "/tmp/build"
	moduleDir  = "/opt/codeactions/go/codeactions"
	goCache    = "/opt/codeactions/gocache"
	goBinary   = "/usr/local/bin/go"
	userFile   = "main.go"
	mainFile   = "zz_codeactions_main.go"
	binaryName = "action"
)

func main() {
	runtime.GOMAXPROCS(2)
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "", "run":
		os.Exit(runMode())
	case "serve":
		os.Exit(serveMode())
	case "compile":
		os.Exit(compileMode())
	case "warmup":
		os.Exit(warmup())
	default:
		fmt.Fprintf(os.Stderr, "launcher: unknown mode %q (run, compile, warmup)\n", mode)
		os.Exit(2)
	}
}

// ============================================================================= run

func runMode() int {
	executable, childJob, err := prepare()
	if err != nil {
		wire.NewWriter(os.Stdout).SendFinal(wire.EndFrame{T: "end", Status: "failed", Error: err.Error()})
		return 2
	}
	debug.FreeOSMemory() // the job held the whole artifact, base64-encoded
	return runPrepared(executable, childJob)
}

// runPrepared runs the action in executable (a memfd) with childJob on its stdin and sends
// the frames on stdout: the one-shot run mode, and each run of a warm environment.
func runPrepared(executable *os.File, childJob []byte) int {
	out := wire.NewWriter(os.Stdout)
	fail := func(message string) int {
		out.SendFinal(wire.EndFrame{T: "end", Status: "failed", Error: message})
		return 2
	}
	// Legacy mode (engines/PROTOCOL.md): "program" is a whole program with its own func
	// main, built as the old service ran it; it speaks no frames and reads no job.
	var mode struct {
		Compat  string `json:"compat"`
		Program bool   `json:"program"`
	}
	_ = json.Unmarshal(childJob, &mode)
	legacy := mode.Compat == "legacy"
	program := legacy && mode.Program
	stdin, extra := io.Reader(bytes.NewReader(childJob)), []*os.File{nil}
	if program {
		stdin, extra = bytes.NewReader(nil), nil
	}

	captureR, captureW, err := os.Pipe()
	if err != nil {
		return fail("could not start the action: " + err.Error())
	}
	framesR, framesW, err := os.Pipe()
	if err != nil {
		return fail("could not start the action: " + err.Error())
	}
	cmd := &exec.Cmd{
		Path:       fmt.Sprintf("/proc/self/fd/%d", executable.Fd()),
		Args:       []string{binaryName},
		Dir:        "/tmp",
		Env:        actionEnv(),
		Stdin:      stdin,
		Stdout:     captureW,
		Stderr:     captureW,
		ExtraFiles: extra,
	}
	if extra != nil {
		cmd.ExtraFiles[0] = framesW // fd 3 = childFrameFD
	}
	if err := cmd.Start(); err != nil {
		return fail("could not start the action: " + err.Error())
	}
	if childOOMScoreAdj != "" { // a warm environment: the OOM killer takes the run, not us
		os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", cmd.Process.Pid), []byte(childOOMScoreAdj), 0)
	}
	captureW.Close()
	framesW.Close()
	executable.Close()
	capture := wire.NewCapture(captureR)

	end := forwardFrames(framesR, out)
	waitErr := cmd.Wait()
	// Processes the action started may still hold the capture pipe open: do not wait long.
	capture.Wait(500 * time.Millisecond)
	return report(out, end, cmd.ProcessState, waitErr, capture, legacy, program)
}

// report sends the end of a run once its frames are out: what was printed (the stdout frame)
// and the action's end frame; or, when the action ended without one (state says how),
// what the runtime said and a failed end, or legacy mode's answer to an exit with status 0.
// It gives the one-shot exit status of that end (0 completed, 1 failed).
func report(out *wire.Writer, end []byte, state *os.ProcessState, waitErr error,
	capture *wire.Capture, legacy, program bool) int {
	printed := capture.Text()
	if end != nil {
		if printed != "" || capture.Total() > 0 {
			out.Send(wire.StdoutFrame{T: "stdout", Data: printed, Total: capture.Total()})
		}
		out.SendFinal(json.RawMessage(end))
		if bytes.Contains(end, []byte(`"status":"completed"`)) {
			return 0
		}
		return 1
	}
	if legacy && state != nil && state.ExitCode() == 0 {
		// The old service ran Go codes as programs and answered an empty 200 when they
		// exited cleanly; so does legacy mode, for a program and for os.Exit(0) in Run.
		note := "os.Exit(0) ended the action before Run returned: the caller gets an empty 200 (legacy mode)"
		if program {
			note = "the source is a whole program (func main): it ran as one, what it printed is " +
				"kept as the run's output and the caller gets an empty 200 (legacy mode)"
		}
		out.Send(wire.LogFrame{T: "log", Level: "debug", Content: note})
		out.Send(wire.ResultFrame{T: "result", Value: "", StatusCode: 200, ContentType: "text"})
		if printed != "" || capture.Total() > 0 {
			out.Send(wire.StdoutFrame{T: "stdout", Data: printed, Total: capture.Total()})
		}
		out.SendFinal(wire.EndFrame{T: "end", Status: "completed"})
		return 0
	}
	message := exitMessage(state, waitErr, capture.Tail(), program)
	out.Send(wire.LogFrame{T: "log", Level: "error", Content: wire.Truncate("Action execution failed: "+message, logContentMax)})
	if printed != "" || capture.Total() > 0 {
		out.Send(wire.StdoutFrame{T: "stdout", Data: printed, Total: capture.Total()})
	}
	out.SendFinal(wire.EndFrame{T: "end", Status: "failed", Error: message})
	return 1
}

// actionEnv is the environment an action runs with.
func actionEnv() []string {
	procs := runtime.NumCPU()
	if procs > 4 {
		procs = 4 // threads count against the sandbox's pids limit
	}
	return []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=/tmp",
		"TMPDIR=/tmp",
		"LANG=C.UTF-8",
		"GOMAXPROCS=" + strconv.Itoa(procs),
	}
}

// prepare stores the artifact in an executable memfd and gives the job the child reads.
func prepare() (*os.File, []byte, error) {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid job: %v", err)
	}
	var job map[string]json.RawMessage
	if err := json.Unmarshal(raw, &job); err != nil || job == nil {
		if err == nil {
			err = errors.New("not a JSON object")
		}
		return nil, nil, fmt.Errorf("invalid job: %v", err)
	}
	raw = nil
	var encoded string
	if err := json.Unmarshal(job["artifact"], &encoded); err != nil || encoded == "" {
		return nil, nil, errors.New("invalid job: no artifact (a Go action is compiled before it runs)")
	}
	delete(job, "artifact")
	binary, err := base64.StdEncoding.DecodeString(encoded)
	encoded = ""
	if err != nil {
		return nil, nil, fmt.Errorf("invalid job: artifact is not base64: %v", err)
	}
	if !bytes.HasPrefix(binary, []byte("\x7fELF")) {
		return nil, nil, errors.New("invalid job: artifact is not an executable")
	}
	executable, err := memfdExecutable(binaryName, binary)
	if err != nil {
		return nil, nil, fmt.Errorf("could not store the action: %v", err)
	}
	job["frame_fd"] = json.RawMessage(strconv.Itoa(childFrameFD))
	childJob, err := json.Marshal(job)
	if err != nil {
		executable.Close()
		return nil, nil, fmt.Errorf("invalid job: %v", err)
	}
	return executable, childJob, nil
}

const (
	mfdCloexec      = 0x1
	mfdAllowSealing = 0x2
	mfdExec         = 0x10                  // Linux 6.3+: say so explicitly (older kernels reject it: EINVAL)
	fAddSeals       = 1033                  // F_ADD_SEALS
	sealAll         = 0x1 | 0x2 | 0x4 | 0x8 // F_SEAL_SEAL, _SHRINK, _GROW, _WRITE
	// The memfd is moved at least this high, clear of the descriptors the child is given.
	minExecFD = 10
)

// memfdExecutable puts the action in an anonymous in-memory file: /tmp is mounted noexec
// in the sandbox, a memfd is not on any mount. The child is started from /proc/self/fd/N.
func memfdExecutable(name string, data []byte) (*os.File, error) {
	cname, err := syscall.BytePtrFromString(name)
	if err != nil {
		return nil, err
	}
	flags := uintptr(mfdCloexec | mfdAllowSealing)
	fd, _, errno := syscall.Syscall(sysMemfdCreate, uintptr(unsafe.Pointer(cname)), flags|mfdExec, 0)
	if errno == syscall.EINVAL {
		fd, _, errno = syscall.Syscall(sysMemfdCreate, uintptr(unsafe.Pointer(cname)), flags, 0)
	}
	if errno != 0 {
		return nil, fmt.Errorf("memfd_create: %v", errno)
	}
	high, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, minExecFD)
	syscall.Close(int(fd))
	if errno != 0 {
		return nil, fmt.Errorf("fcntl: %v", errno)
	}
	file := os.NewFile(high, name)
	if _, err := file.Write(data); err != nil {
		file.Close()
		return nil, err
	}
	// Sealed: nothing can change the action once it is stored (a warm environment runs the
	// same memfd for every run, so no run may alter what the next one executes).
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, high, fAddSeals, sealAll); errno != 0 {
		file.Close()
		return nil, fmt.Errorf("sealing the action: %v", errno)
	}
	return file, nil
}

// forwardFrames copies the child's frames to out, whole frames only, until EOF. The end
// frame is held back and returned (nil when the child never sent one).
func forwardFrames(r io.Reader, out *wire.Writer) []byte {
	var end []byte
	header := make([]byte, 4)
	for {
		if _, err := io.ReadFull(r, header); err != nil {
			return end
		}
		size := binary.BigEndian.Uint32(header)
		if size > inspectMax {
			// Too big to be an end frame (a large result): pass it through without holding
			// it in memory. The worker enforces its own output cap as the bytes arrive.
			if end != nil {
				if _, err := io.CopyN(io.Discard, r, int64(size)); err != nil {
					return end
				}
				continue
			}
			if err := out.Stream(header, r, int64(size)); err != nil {
				io.Copy(io.Discard, r) // the frame stream is broken: let the child finish
				return nil
			}
			continue
		}
		frame := make([]byte, 4+int(size))
		copy(frame, header)
		if _, err := io.ReadFull(r, frame[4:]); err != nil {
			return end // a frame cut short by the child's death is dropped
		}
		if end != nil {
			continue // nothing counts after the end frame
		}
		var head struct {
			T string `json:"t"`
		}
		if json.Unmarshal(frame[4:], &head) == nil && head.T == "end" {
			end = frame[4:]
			continue
		}
		out.SendRaw(frame)
	}
}

// exitMessage says why the action (or a legacy program) ended without an end frame.
func exitMessage(state *os.ProcessState, waitErr error, output string, program bool) string {
	if state == nil {
		return fmt.Sprintf("the action could not be waited for: %v", waitErr)
	}
	if status, ok := state.Sys().(syscall.WaitStatus); ok && status.Signaled() {
		return fmt.Sprintf("the action was killed (signal: %v)", status.Signal())
	}
	code := state.ExitCode()
	if code == 2 {
		// The Go runtime exits with status 2 after printing "panic: ..." or "fatal error: ...".
		if crash := wire.CrashMessage(output); crash != "" {
			return crash
		}
	}
	if program {
		return fmt.Sprintf("the program exited with status %d", code)
	}
	return fmt.Sprintf("the action exited with status %d before Run returned", code)
}

// ============================================================================= compile

// compileMode answers with frames: {"t":"artifact","data":<base64>,...} and an end frame,
// or only an end frame {"status":"failed","error":...,"reason":"compile"|"internal"}.
// "compile" errors depend on the source alone (the worker may cache them); "internal"
// ones (out of memory, killed, ...) do not.
func compileMode() int {
	out := wire.NewWriter(os.Stdout)
	raw, err := io.ReadAll(os.Stdin)
	var request struct {
		Source *string `json:"source"`
		Compat string  `json:"compat"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &request)
	}
	if err == nil && request.Source == nil {
		err = errors.New(`missing "source"`)
	}
	if err != nil {
		out.SendFinal(failure("internal", "invalid compile request: "+err.Error()))
		return 2
	}
	started := time.Now()
	binary, program, reason, message := build(*request.Source, request.Compat == "legacy")
	if binary == nil {
		out.SendFinal(failure(reason, message))
		return 1
	}
	out.Send(struct {
		T         string `json:"t"`
		Data      string `json:"data"`
		Size      int    `json:"size"`
		Program   bool   `json:"program,omitempty"`
		GoVersion string `json:"go_version"`
		ElapsedMS int64  `json:"elapsed_ms"`
	}{"artifact", base64.StdEncoding.EncodeToString(binary), len(binary), program, runtime.Version(),
		time.Since(started).Milliseconds()})
	out.SendFinal(wire.EndFrame{T: "end", Status: "completed"})
	return 0
}

func failure(reason, message string) any {
	return struct {
		T      string `json:"t"`
		Status string `json:"status"`
		Error  string `json:"error"`
		Reason string `json:"reason"`
	}{"end", "failed", message, reason}
}

const goMod = `module action

go 1.23

require codeactions v0.0.0

replace codeactions => ` + moduleDir + "\n"

// The import is renamed so that it cannot clash with a name the action declares.
const generatedMain = `// Code generated by the Code Actions Go engine. DO NOT EDIT.

package main

import codeactions__ "codeactions"

func main() { codeactions__.Main(Run) }
`

// build compiles source; on failure it gives the reason ("compile" or "internal") and a
// message with paths relative to the action (main.go:3:5: ...). In legacy mode a source with
// its own func main (a whole program, as the old service ran them) is built as it is, and
// program says so.
func build(source string, legacy bool) (binary []byte, program bool, reason, message string) {
	message, runAt, program := precheck(source, legacy)
	if message != "" {
		return nil, false, "compile", message
	}
	if err := os.RemoveAll(buildDir); err != nil {
		return nil, false, "internal", "could not prepare the build: " + err.Error()
	}
	files := map[string]string{"go.mod": goMod, userFile: source}
	if !program {
		files[mainFile] = generatedMain
	}
	if err := os.MkdirAll(buildDir, 0o700); err != nil {
		return nil, false, "internal", "could not prepare the build: " + err.Error()
	}
	for name, content := range files {
		if err := os.WriteFile(buildDir+"/"+name, []byte(content), 0o600); err != nil {
			return nil, false, "internal", "could not prepare the build: " + err.Error()
		}
	}
	var output bytes.Buffer
	cmd := exec.Command(goBinary, "build", "-trimpath", "-buildvcs=false", "-p=4",
		"-ldflags=-s -w", "-o", buildDir+"/"+binaryName, ".")
	cmd.Dir = buildDir
	cmd.Env = goEnv()
	cmd.Stdout = &output
	cmd.Stderr = &output
	err := cmd.Run()
	if err != nil {
		text := output.String()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return nil, false, "internal", "the Go compiler could not run: " + err.Error()
		}
		if status, ok := exitErr.Sys().(syscall.WaitStatus); ok && status.Signaled() {
			return nil, false, "internal", fmt.Sprintf("the Go compiler was killed (signal: %v)", status.Signal())
		}
		if transient(text) {
			return nil, false, "internal", "the Go compiler failed: " + cleanOutput(text, runAt)
		}
		message := cleanOutput(text, runAt)
		if message == "" {
			message = "the Go compiler failed: " + err.Error()
		}
		return nil, false, "compile", message
	}
	binary, err = os.ReadFile(buildDir + "/" + binaryName)
	if err != nil {
		return nil, false, "internal", "could not read the compiled action: " + err.Error()
	}
	return binary, program, "", ""
}

func goEnv() []string {
	return []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=/tmp",
		"TMPDIR=/tmp",
		"LANG=C.UTF-8",
		"GOCACHE=" + goCache,
		"GOPATH=/tmp/gopath",
		"GOMODCACHE=/tmp/gopath/pkg/mod",
		"GOFLAGS=-mod=mod",
		"GOPROXY=off",
		"GOSUMDB=off",
		"GO111MODULE=on",
		"GOWORK=off",
		"GOENV=off",
		"GOTOOLCHAIN=local",
		"GOTELEMETRY=off",
		"CGO_ENABLED=0",
		"GOOS=linux",
		"GOAMD64=v1",
		// The module index would be written to GOCACHE, which is read-only at run time.
		"GODEBUG=goindex=0",
	}
}

// precheck catches what the compiler would otherwise report through the generated file;
// it also gives where Run is declared ("main.go:5:6"), or "main.go" when it cannot tell, and
// in legacy mode whether the source is a whole program (it declares func main).
func precheck(source string, legacy bool) (message, runAt string, program bool) {
	runAt = userFile
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, userFile, source, parser.SkipObjectResolution)
	if err != nil {
		return "", runAt, false // syntax errors: the compiler says it best
	}
	if file.Name.Name != "main" {
		pos := fset.Position(file.Name.Pos())
		return fmt.Sprintf("%s:%d:%d: an action is package main, not package %s",
			userFile, pos.Line, pos.Column, file.Name.Name), runAt, false
	}
	if legacy {
		for _, decl := range file.Decls {
			if d, ok := decl.(*ast.FuncDecl); ok && d.Recv == nil && d.Name.Name == "main" {
				return "", runAt, true
			}
		}
	}
	hasRun := false
	found := func(ident *ast.Ident) {
		if ident.Name == "Run" && !hasRun {
			hasRun = true
			pos := fset.Position(ident.Pos())
			runAt = fmt.Sprintf("%s:%d:%d", userFile, pos.Line, pos.Column)
		}
	}
	for _, decl := range file.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if d.Recv != nil {
				continue
			}
			if d.Name.Name == "main" {
				pos := fset.Position(d.Name.Pos())
				return fmt.Sprintf("%s:%d:%d: an action defines %s, not func main (the build adds main)",
					userFile, pos.Line, pos.Column, runSignature), runAt, false
			}
			found(d.Name)
		case *ast.GenDecl:
			for _, spec := range d.Specs {
				if vs, ok := spec.(*ast.ValueSpec); ok {
					for _, name := range vs.Names {
						found(name)
					}
				}
			}
		}
	}
	if !hasRun {
		return userFile + ": Run is not defined: an action defines " + runSignature, runAt, false
	}
	return "", runAt, false
}

const runSignature = "func Run(engine *codeactions.Engine) error"

var (
	// "zz_codeactions_main.go:7:34: cannot use Run (value of type func(...)) as func(...) error value in argument to ..."
	wrongRun = regexp.MustCompile(`cannot use Run \(.*?of type (.+)\) as .* in argument to`)
	// The ways go says an import is neither in the standard library nor in codeactions.
	missingPackage = []*regexp.Regexp{
		regexp.MustCompile(`cannot find module providing package (\S+): .*$`),
		regexp.MustCompile(`no required module provides package (\S+).*$`),
		regexp.MustCompile(`package (\S+) is not in std\b.*$`),
	}
)

// stdSources gives the folders the standard library's sources are seen at (GOROOT/src and
// where its symlink leads), to take out of messages.
func stdSources() []string {
	bin, err := filepath.EvalSymlinks(goBinary)
	if err != nil {
		return nil
	}
	src := filepath.Join(filepath.Dir(filepath.Dir(bin)), "src")
	dirs := []string{src}
	if real, err := filepath.EvalSymlinks(src); err == nil && real != src {
		dirs = append(dirs, real)
	}
	return dirs
}

// cleanOutput makes go build's output about the action's own file: no build folders, no
// generated file, no module-system advice that cannot apply here.
func cleanOutput(text, runAt string) string {
	var lines []string
	std := stdSources()
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "# "), // "# action": the package being compiled
			strings.HasPrefix(line, "go: finding module for package"),
			strings.HasPrefix(line, "\tgo get "),
			strings.TrimSpace(line) == "":
			continue
		}
		line = strings.ReplaceAll(line, buildDir+"/", "")
		line = strings.ReplaceAll(line, moduleDir+"/", "codeactions/")
		line = strings.ReplaceAll(line, moduleDir, "codeactions")
		for _, dir := range std {
			line = strings.ReplaceAll(line, dir+"/", "")
		}
		line = strings.TrimPrefix(line, "./")
		line = strings.ReplaceAll(line, "codeactions__.", "codeactions.")
		if strings.HasPrefix(line, mainFile+":") {
			if m := wrongRun.FindStringSubmatch(line); m != nil {
				line = fmt.Sprintf("%s: Run has type %s, but an action defines %s", runAt, m[1], runSignature)
			} else if _, rest, ok := strings.Cut(strings.TrimPrefix(line, mainFile+":"), ": "); ok {
				line = runAt + ": " + rest
			}
		}
		for _, re := range missingPackage {
			if m := re.FindStringSubmatchIndex(line); m != nil {
				pkg := line[m[2]:m[3]]
				line = line[:m[0]] + "package " + pkg +
					" is not available: an action can import the standard library and codeactions only"
				break
			}
		}
		lines = append(lines, line)
	}
	const max = 7000 // the message becomes one log
	out := strings.Join(lines, "\n")
	if len(out) > max {
		out = wire.Truncate(out, max) + "\n..."
	}
	return out
}

func transient(text string) bool {
	for _, marker := range []string{
		"resource temporarily unavailable",
		"cannot allocate memory",
		"out of memory",
		"no space left on device",
		"file too large",
		"signal: killed",
	} {
		if strings.Contains(text, marker) {
			return true
		}
	}
	return false
}

// ============================================================================= warmup

// warmupSource uses the engine the way actions do, so that the warm-up compiles (and
// caches) the codeactions package exactly as a user's build will ask for it.
const warmupSource = `package main

import (
	"encoding/json"
	"fmt"

	"codeactions"
)

func Run(engine *codeactions.Engine) error {
	var data map[string]any
	if engine.Body != "" {
		if err := json.Unmarshal([]byte(engine.Body), &data); err != nil {
			return fmt.Errorf("invalid body: %w", err)
		}
	}
	engine.Log.Info("hello ", engine.Params.Get("name"))
	return engine.Result.Set(data, codeactions.WithContentType("json"))
}
`

// warmup fills GOCACHE (writable only while the image is built) with every standard
// library package and the codeactions package, compiled the way compile mode compiles.
func warmup() int {
	if err := os.MkdirAll(goCache, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "warmup:", err)
		return 1
	}
	std := exec.Command(goBinary, "build", "-trimpath", "-buildvcs=false", "std")
	std.Dir = "/tmp"
	std.Env = goEnv()
	std.Stdout, std.Stderr = os.Stderr, os.Stderr
	if err := std.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "warmup: go build std:", err)
		return 1
	}
	binary, _, _, message := build(warmupSource, false)
	if binary == nil {
		fmt.Fprintln(os.Stderr, "warmup: the sample action does not compile:", message)
		return 1
	}
	os.RemoveAll(buildDir)
	fmt.Fprintf(os.Stderr, "warmup: done (%s, sample action %d bytes)\n", runtime.Version(), len(binary))
	return 0
}
