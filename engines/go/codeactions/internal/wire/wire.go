// Package wire is what the harness and the launcher share: frames (engines/PROTOCOL.md) and
// the capture of what user code prints.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Resident mode (engines/PROTOCOL.md): the launcher starts the action with ResidentEnv=1 and
// these descriptors, and the harness serves one job after another.
const (
	ResidentEnv = "CODEACTIONS_RESIDENT"
	// ResidentFramesFD carries every run's frames (each job also names it, frame_fd).
	ResidentFramesFD = 3
	// ResidentEndedFD gets one byte right before a run's end frame: the run is over.
	ResidentEndedFD = 4
	// ResidentJobsFD brings the jobs, each a frame (4-byte big-endian length, then JSON),
	// the next one only once the last run is over (so it is the go-ahead too).
	ResidentJobsFD = 5
)

// StdoutMax caps what the stdout frame carries (bytes of output, before JSON encoding).
const StdoutMax = 64 * 1024

// Frame kinds, in the order they appear on the wire. Field order matters only for humans.
type LogFrame struct {
	T       string `json:"t"`
	Level   string `json:"level"`
	Content string `json:"content"`
}

type ResultFrame struct {
	T           string `json:"t"`
	Value       string `json:"value"`
	StatusCode  int    `json:"status_code"`
	ContentType string `json:"content_type"`
}

type StdoutFrame struct {
	T    string `json:"t"`
	Data string `json:"data"`
	// Total counts every byte printed, kept or not: the worker enforces its output cap.
	Total int64 `json:"total"`
}

type EndFrame struct {
	T      string `json:"t"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Marshal is json.Marshal without HTML escaping and without the trailing newline.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Encode gives one frame: a 4-byte big-endian length, then the UTF-8 JSON payload.
// Invalid UTF-8 in strings becomes U+FFFD (encoding/json does that).
func Encode(frame any) ([]byte, error) {
	payload, err := Marshal(frame)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(out, uint32(len(payload)))
	copy(out[4:], payload)
	return out, nil
}

// Writer sends frames on one file, whole frames at a time, from any goroutine. After Close
// nothing more is written (user goroutines still logging once the run ended are ignored).
type Writer struct {
	mu     sync.Mutex
	out    io.Writer
	closed bool
	failed bool
}

func NewWriter(out io.Writer) *Writer { return &Writer{out: out} }

// Send encodes and writes one frame; it reports whether the frame went out.
func (w *Writer) Send(frame any) bool {
	data, err := Encode(frame)
	if err != nil {
		return false
	}
	return w.SendRaw(data)
}

// SendRaw writes an already encoded frame.
func (w *Writer) SendRaw(data []byte) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.failed {
		return false
	}
	if _, err := w.out.Write(data); err != nil {
		w.failed = true
		return false
	}
	return true
}

// Stream writes a frame whose payload (n bytes) is read from r, without buffering it. An
// error means the frame may be cut short: the writer refuses everything after it.
func (w *Writer) Stream(header []byte, r io.Reader, n int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.failed {
		_, err := io.CopyN(io.Discard, r, n)
		return err
	}
	if _, err := w.out.Write(header); err != nil {
		w.failed = true
		return err
	}
	if _, err := io.CopyN(w.out, r, n); err != nil {
		w.failed = true
		return err
	}
	return nil
}

// Close makes the writer refuse every later frame; a frame being written is finished first.
func (w *Writer) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// SendFinal sends one last frame and closes the writer, with no frame in between.
func (w *Writer) SendFinal(frame any) bool {
	data, err := Encode(frame)
	w.mu.Lock()
	defer w.mu.Unlock()
	ok := false
	if err == nil && !w.closed && !w.failed {
		if _, werr := w.out.Write(data); werr == nil {
			ok = true
		} else {
			w.failed = true
		}
	}
	w.closed = true
	return ok
}

// Capture drains a pipe, keeping the first StdoutMax bytes for the stdout frame and the
// last TailMax bytes to find a Go runtime crash message in.
type Capture struct {
	mu        sync.Mutex
	head      []byte
	tail      []byte
	truncated bool
	total     int64
	done      chan struct{}
}

// Total is the number of bytes printed in all.
func (c *Capture) Total() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// TailMax is how much of the end of the output is kept to look for a crash message.
const TailMax = 16 * 1024

// NewBufferCapture is a Capture fed with Add instead of a reader of its own.
func NewBufferCapture() *Capture {
	c := &Capture{done: make(chan struct{})}
	close(c.done)
	return c
}

// Add counts and keeps chunk as printed output.
func (c *Capture) Add(chunk []byte) {
	if len(chunk) > 0 {
		c.keep(chunk)
	}
}

// NewCapture starts draining r in a goroutine until EOF or a read error.
func NewCapture(r io.Reader) *Capture {
	c := &Capture{done: make(chan struct{})}
	go c.drain(r)
	return c
}

func (c *Capture) drain(r io.Reader) {
	defer close(c.done)
	buf := make([]byte, 32*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			c.keep(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (c *Capture) keep(chunk []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += int64(len(chunk))
	if room := StdoutMax - len(c.head); room > 0 {
		if len(chunk) <= room {
			c.head = append(c.head, chunk...)
		} else {
			c.head = append(c.head, chunk[:room]...)
			c.truncated = true
		}
	} else {
		c.truncated = true
	}
	c.tail = append(c.tail, chunk...)
	if len(c.tail) > 2*TailMax {
		c.tail = append(c.tail[:0], c.tail[len(c.tail)-TailMax:]...)
	}
}

// Wait waits for EOF at most d (processes the user code started may hold the pipe open).
func (c *Capture) Wait(d time.Duration) {
	select {
	case <-c.done:
	case <-time.After(d):
	}
}

// Text is what was captured, as valid UTF-8: a character cut in half by the cap is dropped,
// other invalid bytes become U+FFFD.
func (c *Capture) Text() string {
	c.mu.Lock()
	data := append([]byte(nil), c.head...)
	truncated := c.truncated
	c.mu.Unlock()
	if truncated {
		data = dropPartialRune(data)
	}
	return strings.ToValidUTF8(string(data), "\uFFFD")
}

// Tail is the end of the output (at most TailMax bytes), as valid UTF-8.
func (c *Capture) Tail() string {
	c.mu.Lock()
	data := c.tail
	if len(data) > TailMax {
		data = data[len(data)-TailMax:]
	}
	text := strings.ToValidUTF8(string(data), "\uFFFD")
	c.mu.Unlock()
	return text
}

func dropPartialRune(data []byte) []byte {
	// Look back over at most utf8.UTFMax-1 bytes for the start of an incomplete rune.
	for i := 1; i < utf8.UTFMax && i <= len(data); i++ {
		b := data[len(data)-i]
		if utf8.RuneStart(b) {
			if !utf8.FullRune(data[len(data)-i:]) {
				return data[:len(data)-i]
			}
			break
		}
	}
	return data
}

// CrashMessage finds what the Go runtime printed when the process died: the last line that
// starts with "panic: " or "fatal error: " (e.g. "fatal error: stack overflow").
func CrashMessage(output string) string {
	best := ""
	for _, line := range strings.Split(output, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
			best = line
		}
	}
	return best
}

// Truncate cuts s to at most max characters (runes).
func Truncate(s string, max int) string {
	if max <= 0 || len(s) <= max { // len counts bytes, so fewer runes than max too
		return s
	}
	n := 0
	for i := range s {
		if n == max {
			return s[:i]
		}
		n++
	}
	return s
}

// ReadFrame reads one frame (4-byte big-endian length, then the payload) and nothing more:
// the next reader of r finds the following bytes there.
func ReadFrame(r io.Reader, max uint32) ([]byte, error) {
	header := make([]byte, 4)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(header)
	if size > max {
		return nil, fmt.Errorf("frame of %d bytes", size)
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, err
	}
	return payload, nil
}

// OpenFile wraps an inherited descriptor; nil when it is not open.
func OpenFile(fd int, name string) *os.File {
	f := os.NewFile(uintptr(fd), name)
	if f == nil {
		return nil
	}
	if _, err := f.Stat(); err != nil {
		return nil
	}
	return f
}
