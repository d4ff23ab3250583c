// Resident mode (engines/PROTOCOL.md, "Resident mode"): a warm environment bound with
// "resident": true keeps the action's process from one run to the next. The supervisor
// starts the sealed action once (when a job needs it) with wire.ResidentEnv=1, and its
// harness serves one job after another: the supervisor relays each job on a pipe, forwards
// the run's frames, holds back its end frame and sends the run's output (what it printed up
// to the job's output mark) before it. Right before the end frame the harness writes one
// byte on its "ended" pipe; then it waits for its next job, which comes only after `done`. At `finish` the
// process is kept when its run ended (the byte, and the worker's "ended": true), it is
// alive and its resident memory is at most rss_max: everything
// else in the container is killed, /tmp is left alone and `done` says "kept": true.
// Otherwise everything goes, as after a warm run, and the next job starts
// a new process. A whole program (legacy mode) is served as in a warm environment.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"codeactions/internal/wire"
)

// outputPatience bounds the waits for what a run printed or signalled after its end frame:
// a process the action started may hold the pipes, the action may have moved its fd 1.
const outputPatience = 500 * time.Millisecond

// zombiesMax: a process holding more zombies than this is replaced, before the children a
// code starts and never waits for exhaust the container's pids limit run after run.
const zombiesMax = 32

type residentKeeper struct {
	executable *os.File
	rssMax     int64 // bytes; negative: no bound
	proc       *residentProcess
}

// residentProcess is one process of the action and the supervisor's ends of its pipes.
type residentProcess struct {
	pid     int
	jobs    *os.File      // its wire.ResidentJobsFD
	ended   chan struct{} // a byte came on its wire.ResidentEndedFD
	exited  chan struct{} // closed once it was reaped; then state and waitErr are set
	state   *os.ProcessState
	waitErr error

	framesDone  chan struct{} // its frame pipe reached EOF
	captureDone chan struct{} // its output pipe reached EOF

	mu     sync.Mutex
	run    *residentRun // the run it serves, nil between runs
	broken bool         // its frame stream broke: never kept
}

// residentRun is what belongs to one run: its frames writer, its output, its end frame.
type residentRun struct {
	out     *wire.Writer
	capture *wire.Capture
	mark    []byte
	held    []byte // the end of the output, when it may be the start of the mark
	// closed: the run's output is complete (its mark came, or it was given up waiting for).
	closed   bool
	markSeen chan struct{}
	endSeen  bool
	end      chan []byte
}

// supervise runs one job in the resident process, from its seal to the worker's finish;
// nil when the worker left. The result says whether the process was kept ("kept").
func (k *residentKeeper) supervise(raw []byte) map[string]any {
	seal, ok := readSeal()
	if !ok {
		return nil
	}
	oomBefore := oomKills()
	done := func(clean, kept bool) map[string]any {
		return map[string]any{"nonce": seal.Nonce, "oom": oomKills() > oomBefore,
			"clean": clean, "kept": kept, "exit_code": nil, "signal": nil}
	}
	// Nothing the action prints can contain it: it is drawn for this run only.
	mark := make([]byte, 16)
	if _, err := rand.Read(mark); err != nil {
		failRun("could not start the action: " + err.Error())
		return k.failedStart(seal.Nonce, oomBefore, done)
	}
	markText := "\x00codeactions:output-end:" + hex.EncodeToString(mark) + "\x00"
	childJob, legacy, err := residentJob(raw, markText)
	raw = nil
	if err != nil {
		failRun(err.Error())
		return k.failedStart(seal.Nonce, oomBefore, done)
	}
	if p := k.proc; p != nil && !p.alive() {
		// It died between runs (a goroutine an earlier run left): a new one, on a clean slate.
		k.discard()
		cleanUp()
	}
	run := newRun([]byte(markText))
	if k.proc == nil {
		// The run is the new process's from the start: what its init prints is the run's.
		p, err := k.start(run)
		if err != nil {
			failRun("could not start the action: " + err.Error())
			return k.failedStart(seal.Nonce, oomBefore, done)
		}
		k.proc = p
	} else {
		k.proc.begin(run)
	}
	p := k.proc
	go p.send(childJob)
	childJob = nil

	backstop := time.NewTimer(time.Duration(seal.TimeoutMS)*time.Millisecond + deadlineGrace)
	defer backstop.Stop()
	deadline := backstop.C
	ctrl := readControl()
	exited, ended, endCh := p.exited, p.ended, run.end
	forwarded, endedByte, code := false, false, 0
	for {
		select {
		case end := <-endCh:
			endCh = nil
			// What it printed is all in once its mark came through the output pipe, and its
			// byte (written just before the end frame) is there by now unless it died.
			waitAny(outputPatience, run.markSeen, p.captureDone, p.exited)
			if !endedByte {
				select {
				case <-ended:
					endedByte, ended = true, nil
				case <-p.exited:
				case <-time.After(outputPatience):
				}
			}
			p.closeOutput(run)
			code = report(run.out, end, nil, nil, run.capture, legacy, false)
			forwarded = true
		case <-ended:
			endedByte, ended = true, nil
		case <-exited:
			exited, deadline = nil, nil
			// Its last frames and output: the pipes end with it (unless a process it started
			// holds them: not long).
			waitAny(outputPatience, p.framesDone)
			waitAny(outputPatience, p.captureDone)
			if !forwarded {
				var end []byte
				select {
				case end = <-endCh: // it came before the pipe's end
					endCh = nil
				default:
				}
				p.closeOutput(run)
				if end == nil && oomKills() > oomBefore {
					// Out of memory: no end frame, the exited marker says it (the worker takes
					// a resident run's failed end as final, and would not read the marker).
					if run.capture.Text() != "" || run.capture.Total() > 0 {
						run.out.Send(wire.StdoutFrame{T: "stdout", Data: run.capture.Text(),
							Total: run.capture.Total()})
					}
					code = 1
				} else {
					code = report(run.out, end, p.state, p.waitErr, run.capture, legacy, false)
				}
				forwarded = true
			}
			run.out.Close()
			killAll() // whatever the run started goes with it
			marker(map[string]any{"t": "exited", "nonce": seal.Nonce,
				"oom": oomKills() > oomBefore, "exit_code": code, "signal": nil})
		case c := <-ctrl:
			if c.err != nil {
				run.out.Close()
				return nil
			}
			if c.t != "finish" {
				ctrl = readControl()
				continue
			}
			run.out.Close() // nothing of this run is written after finish
			p.end(run)
			if c.ended && forwarded && endedByte && p.alive() && !p.isBroken() && k.withinMemory(p.pid) {
				if clean, zombies := killOthers(p.pid); clean && zombies <= zombiesMax && p.alive() {
					return done(true, true)
				}
			}
			return done(k.discard(), false)
		case <-deadline:
			deadline = nil
			// The worker's own deadline passed long ago: end the run anyway (its exit follows).
			syscall.Kill(-1, syscall.SIGKILL)
		}
	}
}

// failedStart ends a run that never reached the action: as a warm run whose process could
// not start (an exit status of 2), then whatever is left goes at finish.
func (k *residentKeeper) failedStart(nonce string, oomBefore int,
	done func(clean, kept bool) map[string]any) map[string]any {
	marker(map[string]any{"t": "exited", "nonce": nonce, "oom": oomKills() > oomBefore,
		"exit_code": 2, "signal": nil})
	for {
		c := <-readControl()
		if c.err != nil {
			return nil
		}
		if c.t == "finish" {
			return done(k.discard(), false)
		}
	}
}

// discard kills every process of the container, the resident one too; true once none is
// left. The next job starts a new one.
func (k *residentKeeper) discard() bool {
	p := k.proc
	k.proc = nil
	if p == nil {
		return killAll()
	}
	// Not killAll at once: its reaping could take the resident process's exit status from
	// the goroutine that waits for it.
	syscall.Kill(-1, syscall.SIGKILL)
	waitAny(killPatience, p.exited)
	clean := killAll()
	p.jobs.Close()
	return clean
}

func (k *residentKeeper) withinMemory(pid int) bool {
	if k.rssMax < 0 {
		return true
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(data))
	if len(fields) < 2 {
		return false
	}
	pages, err := strconv.ParseInt(fields[1], 10, 64)
	return err == nil && pages*int64(os.Getpagesize()) <= k.rssMax
}

// start execs the sealed action in resident mode for run and starts reading its pipes.
func (k *residentKeeper) start(run *residentRun) (*residentProcess, error) {
	executable, err := dupHigh(k.executable)
	if err != nil {
		return nil, err
	}
	defer executable.Close()
	var ends []*os.File // every pipe end, closed on failure
	pipe := func() (*os.File, *os.File) {
		r, w, perr := os.Pipe()
		if perr != nil {
			err = perr
			return nil, nil
		}
		ends = append(ends, r, w)
		return r, w
	}
	jobsR, jobsW := pipe()
	captureR, captureW := pipe()
	framesR, framesW := pipe()
	endedR, endedW := pipe()
	if err != nil {
		for _, f := range ends {
			f.Close()
		}
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:   fmt.Sprintf("/proc/self/fd/%d", executable.Fd()),
		Args:   []string{binaryName},
		Dir:    "/tmp",
		Env:    append(actionEnv(), wire.ResidentEnv+"=1"),
		Stdout: captureW,
		Stderr: captureW,
		// fds 3, 4, 5: wire.ResidentFramesFD, EndedFD, JobsFD
		ExtraFiles: []*os.File{framesW, endedW, jobsR},
	}
	if err := cmd.Start(); err != nil {
		for _, f := range ends {
			f.Close()
		}
		return nil, err
	}
	// The OOM killer takes the action, not the supervisor.
	os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", cmd.Process.Pid), []byte(childOOMScoreAdj), 0)
	for _, f := range []*os.File{jobsR, captureW, framesW, endedW} {
		f.Close()
	}
	p := &residentProcess{
		pid: cmd.Process.Pid, jobs: jobsW,
		ended: make(chan struct{}, 1), exited: make(chan struct{}),
		framesDone: make(chan struct{}), captureDone: make(chan struct{}), run: run,
	}
	go func() {
		p.waitErr = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.exited)
	}()
	go p.readFrames(framesR)
	go p.drainOutput(captureR)
	go p.readEnded(endedR)
	return p, nil
}

func (p *residentProcess) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *residentProcess) isBroken() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.broken
}

func newRun(mark []byte) *residentRun {
	return &residentRun{
		out: wire.NewWriter(os.Stdout), capture: wire.NewBufferCapture(), mark: mark,
		markSeen: make(chan struct{}), end: make(chan []byte, 1),
	}
}

// begin makes run the one whose frames and output are taken from now on.
func (p *residentProcess) begin(run *residentRun) {
	select { // a byte an earlier run's leftovers wrote
	case <-p.ended:
	default:
	}
	p.mu.Lock()
	p.run = run
	p.mu.Unlock()
}

// end drops run: what comes afterwards, until the next job, belongs to no run.
func (p *residentProcess) end(run *residentRun) {
	p.mu.Lock()
	if p.run == run {
		p.run = nil
	}
	p.mu.Unlock()
}

func (p *residentProcess) send(job []byte) {
	frame := make([]byte, 4+len(job))
	binary.BigEndian.PutUint32(frame, uint32(len(job)))
	copy(frame[4:], job)
	p.jobs.Write(frame) // a process that died meanwhile: its exit tells
}

// closeOutput completes run's output: nothing printed from now on is its.
func (p *residentProcess) closeOutput(run *residentRun) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !run.closed {
		run.capture.Add(run.held)
		run.held, run.closed = nil, true
	}
}

// drainOutput reads what the process prints (fd 1 and fd 2) for as long as it lives: the
// current run's, up to its mark, goes to that run; the rest (between runs, or what a
// goroutine prints after its run's end) is dropped.
func (p *residentProcess) drainOutput(r *os.File) {
	defer close(p.captureDone)
	defer r.Close()
	buf := make([]byte, 32*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p.took(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (p *residentProcess) took(chunk []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	run := p.run
	if run == nil || run.closed {
		return
	}
	data := append(run.held, chunk...)
	if i := bytes.Index(data, run.mark); i >= 0 {
		run.capture.Add(data[:i])
		run.held, run.closed = nil, true
		close(run.markSeen)
		return
	}
	// Keep back an end that may be the start of the mark, split across two reads.
	keep := 0
	for n := min(len(run.mark)-1, len(data)); n > 0; n-- {
		if bytes.HasSuffix(data, run.mark[:n]) {
			keep = n
			break
		}
	}
	run.capture.Add(data[:len(data)-keep])
	run.held = append([]byte(nil), data[len(data)-keep:]...)
}

// current is the run frames go to: nil between runs and once the run's end frame came.
func (p *residentProcess) current() *residentRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == nil || p.run.endSeen {
		return nil
	}
	return p.run
}

// readFrames forwards the current run's frames whole, as forwardFrames does for a warm run,
// and hands its end frame over instead of sending it.
func (p *residentProcess) readFrames(r *os.File) {
	defer close(p.framesDone)
	defer r.Close()
	header := make([]byte, 4)
	for {
		if _, err := io.ReadFull(r, header); err != nil {
			return
		}
		size := binary.BigEndian.Uint32(header)
		run := p.current()
		if size > inspectMax {
			// Too big to be an end frame (a large result): passed through, never held.
			if run == nil {
				if _, err := io.CopyN(io.Discard, r, int64(size)); err != nil {
					return
				}
				continue
			}
			if err := run.out.Stream(header, r, int64(size)); err != nil {
				p.mu.Lock()
				p.broken = true
				p.mu.Unlock()
				io.Copy(io.Discard, r)
				return
			}
			continue
		}
		frame := make([]byte, 4+int(size))
		copy(frame, header)
		if _, err := io.ReadFull(r, frame[4:]); err != nil {
			return // a frame cut short by the process's death is dropped
		}
		if run == nil {
			continue
		}
		var head struct {
			T string `json:"t"`
		}
		if json.Unmarshal(frame[4:], &head) == nil && head.T == "end" {
			p.mu.Lock()
			run.endSeen = true
			p.mu.Unlock()
			run.end <- frame[4:]
			continue
		}
		run.out.SendRaw(frame)
	}
}

func (p *residentProcess) readEnded(r *os.File) {
	defer r.Close()
	buf := make([]byte, 64)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case p.ended <- struct{}{}:
			default:
			}
		}
		if err != nil {
			return
		}
	}
}

// killOthers SIGKILLs every process of the container but this one and the resident one
// (keep), and reaps those that were ours; true once none is left, and how many zombies the
// resident process holds: children it has not waited for are its own business (it may
// still), but each takes a pid of the container's pids limit.
func killOthers(keep int) (bool, int) {
	deadline := time.Now().Add(killPatience)
	self := os.Getpid()
	for {
		entries, _ := os.ReadDir("/proc")
		others, zombies := false, 0
		for _, entry := range entries {
			pid, err := strconv.Atoi(entry.Name())
			if err != nil || pid == self || pid == keep {
				continue
			}
			state, ppid, ok := procState(pid)
			if !ok {
				continue // gone meanwhile
			}
			if state == 'Z' {
				if ppid == keep {
					zombies++
					continue
				}
				if ppid == self {
					syscall.Wait4(pid, nil, syscall.WNOHANG, nil)
				}
				others = true // its parent dies next and it comes to us
				continue
			}
			syscall.Kill(pid, syscall.SIGKILL)
			others = true
		}
		if !others {
			return true, zombies
		}
		if time.Now().After(deadline) {
			return false, zombies
		}
		time.Sleep(time.Millisecond)
	}
}

// procState reads the state letter and the parent of pid from /proc/<pid>/stat.
func procState(pid int) (byte, int, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) S ppid ...": comm may hold spaces and parentheses; the last ')' ends it.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, false
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 2 || len(fields[0]) != 1 {
		return 0, 0, false
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return 0, 0, false
	}
	return fields[0][0], ppid, true
}

type sealFrame struct {
	T         string `json:"t"`
	Nonce     string `json:"nonce"`
	TimeoutMS int64  `json:"timeout_ms"`
}

func readSeal() (sealFrame, bool) {
	var seal sealFrame
	raw, err := wire.ReadFrame(os.Stdin, controlMax)
	if err != nil || json.Unmarshal(raw, &seal) != nil || seal.T != "seal" {
		return seal, false
	}
	if seal.TimeoutMS <= 0 {
		seal.TimeoutMS = 300_000
	}
	return seal, true
}

// residentJob is the job the resident process reads: the worker's, with the frame
// descriptor and the run's output mark; and whether it is in legacy mode.
func residentJob(raw []byte, mark string) ([]byte, bool, error) {
	var job map[string]json.RawMessage
	if err := json.Unmarshal(raw, &job); err != nil || job == nil {
		if err == nil {
			err = errors.New("not a JSON object")
		}
		return nil, false, fmt.Errorf("invalid job: %v", err)
	}
	var compat string
	_ = json.Unmarshal(job["compat"], &compat)
	delete(job, "artifact")
	job["frame_fd"] = json.RawMessage(strconv.Itoa(wire.ResidentFramesFD))
	encoded, _ := json.Marshal(mark)
	job["output_mark"] = encoded
	out, err := json.Marshal(job)
	return out, compat == "legacy", err
}

// wholeProgram: a legacy whole program (func main) has no harness to serve many runs.
func wholeProgram(raw []byte) bool {
	var mode struct {
		Compat  string `json:"compat"`
		Program bool   `json:"program"`
	}
	return json.Unmarshal(raw, &mode) == nil && mode.Compat == "legacy" && mode.Program
}

// waitAny waits until one of chans is closed (or gives a value), at most d.
func waitAny(d time.Duration, chans ...<-chan struct{}) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	cases := make(chan struct{}, len(chans))
	stop := make(chan struct{})
	defer close(stop)
	for _, ch := range chans {
		go func(ch <-chan struct{}) {
			select {
			case <-ch:
				cases <- struct{}{}
			case <-stop:
			}
		}(ch)
	}
	select {
	case <-cases:
	case <-timer.C:
	}
}
