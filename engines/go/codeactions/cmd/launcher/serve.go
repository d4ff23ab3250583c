// Warm environments (engines/PROTOCOL.md, "Warm environments"): `launcher serve` is PID 1 of
// a container bound to one compiled action. It keeps the action in a sealed memfd and, for
// every run, starts a fresh `launcher warm-run` process, before the job exists, that reads its
// own job from stdin and writes its own frames to stdout, exactly like the one-shot run mode.
// The supervisor never holds a run's data. Between runs it kills every other process,
// empties /tmp, /dev/shm, /dev/mqueue and System V IPC, and only then starts the next run's
// process. It is not dumpable; its own messages (markers) carry the high bit in their length
// and a nonce the worker sends only after the run's process has taken its job.
package main

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	markerBit     = 0x80000000
	controlMax    = 64 << 20 // the bind carries the whole action, base64-encoded
	deadlineGrace = 5 * time.Second
	killPatience  = 2 * time.Second
	prSetDumpable = 4
	ipcRmid       = 0
	takenFD       = 3 // warm-run: where it says it took its job
	artifactFD    = 4 // warm-run: the sealed memfd
)

var writableDirs = []string{"/tmp", "/dev/shm", "/dev/mqueue"}

// readFrame is unbuffered on purpose: the next reader of stdin must find its bytes there.
func readFrame(r io.Reader, max uint32) ([]byte, error) {
	header := make([]byte, 4)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(header)
	if size > max {
		return nil, fmt.Errorf("control frame of %d bytes", size)
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, err
	}
	return payload, nil
}

func marker(message map[string]any) {
	payload, _ := json.Marshal(message)
	frame := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(frame, markerBit|uint32(len(payload)))
	copy(frame[4:], payload)
	os.Stdout.Write(frame)
}

// ----------------------------------------------------------------------------- serve

type runner struct {
	cmd    *exec.Cmd
	taken  *os.File
	exited chan *os.ProcessState
}

func serveMode() int {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0); errno != 0 {
		fmt.Fprintln(os.Stderr, "serve: prctl:", errno)
		return 2
	}
	// As PID 1 only signals with a handler reach us from inside; the runtime has handlers.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGABRT)
	raw, err := readFrame(os.Stdin, controlMax)
	if err != nil {
		return 0
	}
	var bind struct {
		T        string `json:"t"`
		Nonce    string `json:"nonce"`
		Artifact string `json:"artifact"`
	}
	if json.Unmarshal(raw, &bind) != nil || bind.T != "bind" {
		fmt.Fprintln(os.Stderr, "serve: expected a bind")
		return 2
	}
	program, err := base64.StdEncoding.DecodeString(bind.Artifact)
	if err != nil || !strings.HasPrefix(string(program[:min(4, len(program))]), "\x7fELF") {
		fmt.Fprintln(os.Stderr, "serve: the bind holds no executable")
		return 2
	}
	executable, err := memfdExecutable(binaryName, program)
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 2
	}
	raw, program, bind.Artifact = nil, nil, ""
	cleanUp()
	next, err := startRunner(executable)
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 2
	}
	marker(map[string]any{"t": "ready", "nonce": bind.Nonce})
	for {
		if !next.waitTaken() {
			killAll()
			return 0 // stdin closed (the worker is gone) or the runner failed
		}
		result := supervise(next)
		if result == nil {
			killAll()
			return 0
		}
		clean := result["clean"] == true && cleanUp()
		result["clean"] = clean
		if clean {
			if next, err = startRunner(executable); err != nil {
				result["clean"] = false
			}
		}
		result["t"] = "done"
		marker(result)
		if result["clean"] != true {
			return 6
		}
	}
}

func startRunner(executable *os.File) (*runner, error) {
	takenR, takenW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{"launcher", "warm-run"},
		Dir:         "/tmp",
		Env:         []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"},
		Stdin:       os.Stdin,
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		ExtraFiles:  []*os.File{takenW, executable}, // fds 3 and 4
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		takenR.Close()
		takenW.Close()
		return nil, err
	}
	takenW.Close()
	r := &runner{cmd: cmd, taken: takenR, exited: make(chan *os.ProcessState, 1)}
	go func() {
		cmd.Wait()
		r.exited <- cmd.ProcessState
	}()
	return r, nil
}

func (r *runner) waitTaken() bool {
	buf := make([]byte, 1)
	n, _ := r.taken.Read(buf)
	r.taken.Close()
	return n == 1 && buf[0] == 'T'
}

type control struct {
	t   string
	err error
}

func readControl() <-chan control {
	ch := make(chan control, 1)
	go func() {
		raw, err := readFrame(os.Stdin, controlMax)
		var message struct {
			T string `json:"t"`
		}
		if err == nil {
			err = json.Unmarshal(raw, &message)
		}
		ch <- control{message.T, err}
	}()
	return ch
}

// supervise follows one run from its seal to the worker's finish; nil when the worker left.
func supervise(r *runner) map[string]any {
	raw, err := readFrame(os.Stdin, controlMax)
	var seal struct {
		T         string `json:"t"`
		Nonce     string `json:"nonce"`
		TimeoutMS int64  `json:"timeout_ms"`
	}
	if err != nil || json.Unmarshal(raw, &seal) != nil || seal.T != "seal" {
		return nil
	}
	if seal.TimeoutMS <= 0 {
		seal.TimeoutMS = 300_000
	}
	oomBefore := oomKills()
	backstop := time.NewTimer(time.Duration(seal.TimeoutMS)*time.Millisecond + deadlineGrace)
	defer backstop.Stop()
	exited, deadline := r.exited, backstop.C
	var state *os.ProcessState
	ctrl := readControl()
	for {
		select {
		case c := <-ctrl:
			if c.err != nil {
				return nil
			}
			if c.t != "finish" && c.t != "kill" {
				ctrl = readControl()
				continue
			}
			clean := killAll()
			result := statusFields(state)
			result["nonce"], result["oom"], result["clean"] = seal.Nonce, oomKills() > oomBefore, clean
			return result
		case state = <-exited:
			exited, deadline = nil, nil
			killAll() // whatever the run started goes with it
			result := statusFields(state)
			result["t"], result["nonce"], result["oom"] = "exited", seal.Nonce, oomKills() > oomBefore
			marker(result)
		case <-deadline:
			killAll()
			state = <-exited
			exited, deadline = nil, nil
			result := statusFields(state)
			result["t"], result["nonce"], result["oom"] = "exited", seal.Nonce, oomKills() > oomBefore
			marker(result)
		}
	}
}

func statusFields(state *os.ProcessState) map[string]any {
	fields := map[string]any{"exit_code": nil, "signal": nil}
	if state == nil {
		return fields
	}
	if status, ok := state.Sys().(syscall.WaitStatus); ok && status.Signaled() {
		fields["exit_code"], fields["signal"] = 128+int(status.Signal()), int(status.Signal())
	} else {
		fields["exit_code"] = state.ExitCode()
	}
	return fields
}

// killAll SIGKILLs every other process of the container (kill(-1) from PID 1 reaches all)
// and reaps them; true once none is left.
func killAll() bool {
	deadline := time.Now().Add(killPatience)
	self := strconv.Itoa(os.Getpid())
	for {
		syscall.Kill(-1, syscall.SIGKILL)
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		entries, _ := os.ReadDir("/proc")
		others := false
		for _, entry := range entries {
			if name := entry.Name(); name != self && name[0] >= '0' && name[0] <= '9' {
				others = true
				break
			}
		}
		if !others {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

func oomKills() int {
	for _, path := range []string{"/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"} {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if value, ok := strings.CutPrefix(line, "oom_kill "); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(value))
				return n
			}
		}
	}
	return 0
}

// cleanUp empties every place a run could leave something; true when all of it is empty.
func cleanUp() bool {
	for _, dir := range writableDirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, entry := range entries {
			removeAll(filepath.Join(dir, entry.Name()))
		}
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			return false
		}
	}
	for _, kind := range []struct {
		table string
		call  uintptr
	}{{"shm", syscall.SYS_SHMCTL}, {"msg", syscall.SYS_MSGCTL}, {"sem", syscall.SYS_SEMCTL}} {
		for _, id := range ipcIDs(kind.table) {
			if kind.table == "sem" {
				syscall.Syscall(kind.call, uintptr(id), 0, ipcRmid)
			} else {
				syscall.Syscall(kind.call, uintptr(id), ipcRmid, 0)
			}
		}
		if len(ipcIDs(kind.table)) > 0 {
			return false
		}
	}
	return true
}

// removeAll is os.RemoveAll that first gives back permissions a run took from itself.
func removeAll(path string) {
	filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	os.Chmod(path, 0o700)
	os.RemoveAll(path)
}

func ipcIDs(table string) []int {
	data, err := os.ReadFile("/proc/sysvipc/" + table)
	if err != nil {
		return nil
	}
	var ids []int
	for i, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if i == 0 || len(fields) < 2 {
			continue
		}
		if id, err := strconv.Atoi(fields[1]); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// ----------------------------------------------------------------------------- warm-run

// warmRunMode is one run of a warm environment: take the job from stdin, say so, then run it
// like the one-shot mode does, from the sealed memfd the supervisor handed over.
func warmRunMode() int {
	os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0) // the OOM killer takes us first
	taken := os.NewFile(takenFD, "taken")
	raw, err := readFrame(os.Stdin, controlMax)
	if devnull, derr := os.Open(os.DevNull); derr == nil {
		syscall.Dup2(int(devnull.Fd()), 0) // the worker's channel is the supervisor's again
		devnull.Close()
	}
	if err != nil {
		return 4
	}
	taken.Write([]byte("T"))
	taken.Close()
	high, _, errno := syscall.Syscall(syscall.SYS_FCNTL, artifactFD, syscall.F_DUPFD_CLOEXEC, minExecFD)
	if errno != 0 {
		return failRun(fmt.Sprintf("could not start the action: %v", errno))
	}
	syscall.Close(artifactFD)
	executable := os.NewFile(high, binaryName)
	var job map[string]json.RawMessage
	if err := json.Unmarshal(raw, &job); err != nil || job == nil {
		if err == nil {
			err = errors.New("not a JSON object")
		}
		return failRun(fmt.Sprintf("invalid job: %v", err))
	}
	delete(job, "artifact")
	job["frame_fd"] = json.RawMessage(strconv.Itoa(childFrameFD))
	childJob, err := json.Marshal(job)
	if err != nil {
		return failRun(fmt.Sprintf("invalid job: %v", err))
	}
	return runPrepared(executable, childJob)
}

func failRun(message string) int {
	marker := map[string]any{"t": "end", "status": "failed", "error": message}
	payload, _ := json.Marshal(marker)
	frame := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(frame, uint32(len(payload)))
	copy(frame[4:], payload)
	os.Stdout.Write(frame)
	return 2
}
