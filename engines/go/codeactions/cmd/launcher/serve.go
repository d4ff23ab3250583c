// Warm environments (engines/PROTOCOL.md, "Warm environments"): `launcher serve` is PID 1 of
// a container bound to one compiled action. It keeps the action in a sealed memfd and runs it
// as a fresh process for every run, exactly as the one-shot run mode does (runPrepared): the
// job on its stdin, its frames forwarded whole, what it prints captured. Every run is a new
// exec, so nothing of the supervisor's memory (where a run's data passes) ever reaches
// another run. Between runs it kills every other process, empties /tmp, /dev/shm,
// /dev/mqueue and System V IPC. It is not dumpable and, as PID 1, gets no signal from the
// action it did not ask for. Its own messages (markers) carry the high bit in their length
// and the nonce the worker sends after the job.
package main

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"codeactions/internal/wire"
)

const (
	markerBit     = 0x80000000
	controlMax    = 64 << 20 // the bind carries the whole action, base64-encoded
	deadlineGrace = 5 * time.Second
	killPatience  = 2 * time.Second
	prSetDumpable = 4
	ipcRmid       = 0
)

var writableDirs = []string{"/tmp", "/dev/shm", "/dev/mqueue"}


func marker(message map[string]any) {
	payload, _ := json.Marshal(message)
	frame := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(frame, markerBit|uint32(len(payload)))
	copy(frame[4:], payload)
	os.Stdout.Write(frame)
}

// ----------------------------------------------------------------------------- serve

// childOOMScoreAdj, when set, is written for each action started (serve mode).
var childOOMScoreAdj string

func serveMode() int {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0); errno != 0 {
		fmt.Fprintln(os.Stderr, "serve: prctl:", errno)
		return 2
	}
	// As PID 1 only signals with a handler reach us from inside, and the runtime has
	// handlers: for the faults (SEGV, BUS, FPE, ILL, TRAP, SYS, STKFLT) it crashes even when
	// one was only sent with kill(). Every signal is taken over and dropped (a real fault
	// still crashes: the runtime tells it from a sent one), then the usual ones ignored
	// outright (children inherit that).
	dropped := make(chan os.Signal, 64)
	signal.Notify(dropped)
	go func() {
		for range dropped {
		}
	}()
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGABRT)
	childOOMScoreAdj = "1000"
	raw, err := wire.ReadFrame(os.Stdin, controlMax)
	if err != nil {
		return 0
	}
	var bind struct {
		T        string `json:"t"`
		Nonce    string `json:"nonce"`
		Artifact string `json:"artifact"`
		Resident bool   `json:"resident"`
		RSSMax   *int64 `json:"rss_max"`
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
	debug.FreeOSMemory()
	cleanUp()
	marker(map[string]any{"t": "ready", "nonce": bind.Nonce})
	var keeper *residentKeeper
	if bind.Resident {
		keeper = &residentKeeper{executable: executable, rssMax: -1}
		if bind.RSSMax != nil {
			keeper.rssMax = *bind.RSSMax
		}
	}
	for {
		job, err := wire.ReadFrame(os.Stdin, controlMax)
		if err != nil {
			killAll()
			return 0 // the worker closed stdin
		}
		var result map[string]any
		if keeper != nil && !wholeProgram(job) {
			result = keeper.supervise(job)
		} else {
			if keeper != nil {
				keeper.discard() // (an environment binds one artifact: never, in practice)
			}
			result = supervise(executable, job)
			if result != nil && keeper != nil {
				result["kept"] = false // a whole program runs as in a warm environment
			}
		}
		if result == nil {
			killAll()
			return 0
		}
		if result["kept"] == true {
			// The process stays, and so does what it left in /tmp (as on Lambda).
			result["t"] = "done"
			marker(result)
			continue
		}
		result["clean"] = result["clean"] == true && cleanUp()
		result["t"] = "done"
		marker(result)
		if result["clean"] != true {
			return 6
		}
	}
}

type control struct {
	t   string
	err error
	// ended (finish): the worker took the run's end frame within every limit.
	ended bool
}

func readControl() <-chan control {
	ch := make(chan control, 1)
	go func() {
		raw, err := wire.ReadFrame(os.Stdin, controlMax)
		var message struct {
			T     string `json:"t"`
			Ended bool   `json:"ended"`
		}
		if err == nil {
			err = json.Unmarshal(raw, &message)
		}
		ch <- control{message.T, err, message.Ended}
	}()
	return ch
}

// supervise runs one job, from its seal to the worker's finish; nil when the worker left.
func supervise(executable *os.File, raw []byte) map[string]any {
	sealRaw, err := wire.ReadFrame(os.Stdin, controlMax)
	var seal struct {
		T         string `json:"t"`
		Nonce     string `json:"nonce"`
		TimeoutMS int64  `json:"timeout_ms"`
	}
	if err != nil || json.Unmarshal(sealRaw, &seal) != nil || seal.T != "seal" {
		return nil
	}
	if seal.TimeoutMS <= 0 {
		seal.TimeoutMS = 300_000
	}
	oomBefore := oomKills()
	exited := make(chan int, 1)
	if childJob, err := warmJob(raw); err != nil {
		failRun(err.Error())
		exited <- 2
	} else if copy, err := dupHigh(executable); err != nil {
		failRun("could not start the action: " + err.Error())
		exited <- 2
	} else {
		go func() { exited <- runPrepared(copy, childJob) }()
	}
	raw = nil
	backstop := time.NewTimer(time.Duration(seal.TimeoutMS)*time.Millisecond + deadlineGrace)
	defer backstop.Stop()
	deadline, running := backstop.C, true
	ctrl := readControl()
	for {
		select {
		case c := <-ctrl:
			if c.err != nil {
				return nil
			}
			if c.t != "finish" {
				ctrl = readControl()
				continue
			}
			clean := killAll()
			if running {
				<-exited // the run's frames are all out before anything else is written
			}
			return map[string]any{"nonce": seal.Nonce, "oom": oomKills() > oomBefore,
				"clean": clean, "exit_code": nil, "signal": nil}
		case code := <-exited:
			running, deadline = false, nil
			killAll() // whatever the run started goes with it
			marker(map[string]any{"t": "exited", "nonce": seal.Nonce,
				"oom": oomKills() > oomBefore, "exit_code": code, "signal": nil})
		case <-deadline:
			deadline = nil
			killAll() // the worker's own deadline passed long ago: end the run anyway
		}
	}
}

// warmJob is the job the action reads: the worker's, with the frame descriptor.
func warmJob(raw []byte) ([]byte, error) {
	var job map[string]json.RawMessage
	if err := json.Unmarshal(raw, &job); err != nil || job == nil {
		if err == nil {
			err = errors.New("not a JSON object")
		}
		return nil, fmt.Errorf("invalid job: %v", err)
	}
	delete(job, "artifact")
	job["frame_fd"] = json.RawMessage(strconv.Itoa(childFrameFD))
	return json.Marshal(job)
}

// dupHigh gives a run its own descriptor of the sealed action (runPrepared closes it).
func dupHigh(file *os.File) (*os.File, error) {
	high, _, errno := syscall.Syscall(syscall.SYS_FCNTL, file.Fd(), syscall.F_DUPFD_CLOEXEC, minExecFD)
	if errno != 0 {
		return nil, errno
	}
	return os.NewFile(high, binaryName), nil
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

func failRun(message string) {
	frame, _ := wire.Encode(wire.EndFrame{T: "end", Status: "failed", Error: message})
	os.Stdout.Write(frame)
}
