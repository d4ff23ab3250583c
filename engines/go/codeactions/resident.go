package codeactions

import (
	"os"
	"runtime/debug"
	"syscall"

	"codeactions/internal/wire"
)

// Resident mode (engines/PROTOCOL.md, "Resident mode"): the launcher's supervisor starts the
// action once and this process serves the runs of its environment one after another, so
// package-level state stays from one run to the next (as on AWS Lambda). The supervisor says
// so with wire.ResidentEnv=1 and the descriptors wire.Resident*FD.

// residentJobMax bounds one job (the worker's own bound on a request is far lower).
const residentJobMax = 64 << 20

// residentMode is decided before the action's own package initialises (imported packages
// initialise first), and the descriptors are closed on exec from then on: a process the
// action starts, even from its init, never holds them.
var residentMode = func() bool {
	if os.Getenv(wire.ResidentEnv) != "1" {
		return false
	}
	os.Unsetenv(wire.ResidentEnv)
	for fd := wire.ResidentFramesFD; fd <= wire.ResidentJobsFD; fd++ {
		syscall.CloseOnExec(fd)
	}
	return true
}()

// serveResident runs job after job until the supervisor closes the jobs pipe. Each run gets
// a fresh Engine (its params, headers, logs, result, legacy notes) and its own frame writer,
// closed by its end frame: what a goroutine an earlier run left behind writes through that
// run's Engine afterwards is dropped. What the runs print goes to fd 1 and fd 2, which the
// supervisor drains; the job's "output_mark" written there before the end frame tells it
// where this run's output ends.
func serveResident(run func(*Engine) error) int {
	framesFile := wire.OpenFile(wire.ResidentFramesFD, "frames")
	jobs := wire.OpenFile(wire.ResidentJobsFD, "jobs")
	ended := wire.OpenFile(wire.ResidentEndedFD, "ended")
	if framesFile == nil || jobs == nil || ended == nil {
		return 2
	}
	redirectStdin()
	debug.SetMaxStack(maxStack)
	signal := []byte{1}
	for {
		raw, err := wire.ReadFrame(jobs, residentJobMax)
		if err != nil {
			return 0 // the supervisor is gone
		}
		job, jobErr := parseJob(raw)
		raw = nil
		frames := wire.NewWriter(framesFile)
		if jobErr != nil {
			ended.Write(signal) // before the end frame, as for every run
			frames.SendFinal(wire.EndFrame{T: "end", Status: "failed", Error: "invalid job: " + jobErr.Error()})
		} else {
			mark, _ := stringField(job["output_mark"])
			// Right before the end frame: the mark ends the run's output, and the byte says
			// the run ended (before the worker can read that end and answer with finish).
			beforeEnd := func(panicked bool) {
				writeMark(mark)
				if !panicked {
					ended.Write(signal)
				}
			}
			if _, panicked := execute(run, job, frames, nil, beforeEnd); panicked {
				// As AWS Lambda's Go runtime does after a panic: the process ends (its run
				// did), and the next run gets a new one.
				return 1
			}
		}
		job = nil
		// The next job is written only once this run is over for the worker and the
		// supervisor (its `done`): reading it is waiting for that.
	}
}

// writeMark writes mark on fd 1 in one write (a pipe write of at most PIPE_BUF bytes is
// atomic: no other write of the action can land inside it).
func writeMark(mark string) {
	if mark == "" {
		return
	}
	data := []byte(mark)
	for len(data) > 0 {
		n, err := syscall.Write(1, data)
		if err == syscall.EINTR || err == syscall.EAGAIN {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		data = data[n:]
	}
}
