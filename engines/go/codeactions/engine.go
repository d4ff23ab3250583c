// Package codeactions is the engine a Code Actions Go action runs with.
//
// An action is a main package that defines Run; it has no func main (the build adds one):
//
//	package main
//
//	import "codeactions"
//
//	func Run(engine *codeactions.Engine) error {
//		name := engine.Params.Get("name")
//		engine.Log.Info("hello ", name)
//		return engine.Result.Set(map[string]any{"hello": name},
//			codeactions.WithStatusCode(201), codeactions.WithContentType("json"))
//	}
//
// A non-nil error returned by Run, or a panic, fails the run with the error log
// "Action execution failed: <message>".
package codeactions

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"codeactions/internal/wire"
)

// Content types accepted by WithContentType.
const (
	ContentText = "text"
	ContentJSON = "json"
	ContentHTML = "html"
)

// LogContentMax is the default cap, in characters, of one log's content.
const LogContentMax = 8000

// Engine is what Run receives.
type Engine struct {
	// Params are the query parameters (the first value of each key).
	Params Params
	// Body is the request body as text, stripped of surrounding whitespace; "" when none.
	Body string
	// Header holds the request headers.
	Header Header
	// Request groups Params, Body, Header and Log.
	Request *Request
	// Log records logs: each call is one log of that level, in call order.
	Log *Logger
	// Result is the action's response; see Result.Set.
	Result *Result
}

// Request is the same Params, Body, Header and Log as on the Engine, grouped.
type Request struct {
	Params Params
	Body   string
	Header Header
	Log    *Logger
}

// ----------------------------------------------------------------------------- params

// Params are the query parameters: one value per key (the first one received).
type Params struct {
	values map[string]string
}

// NewParams makes Params from a map (for an action's own tests).
func NewParams(values map[string]string) Params {
	copied := make(map[string]string, len(values))
	for k, v := range values {
		copied[k] = v
	}
	return Params{values: copied}
}

// Get gives the value of key, or "" when it is absent.
func (p Params) Get(key string) string { return p.values[key] }

// Lookup gives the value of key and whether it was present.
func (p Params) Lookup(key string) (string, bool) {
	v, ok := p.values[key]
	return v, ok
}

// Items gives every parameter as key -> value (a copy).
func (p Params) Items() map[string]string {
	out := make(map[string]string, len(p.values))
	for k, v := range p.values {
		out[k] = v
	}
	return out
}

// Keys gives the parameter names, sorted.
func (p Params) Keys() []string {
	keys := make([]string, 0, len(p.values))
	for k := range p.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Len is the number of parameters.
func (p Params) Len() int { return len(p.values) }

// ----------------------------------------------------------------------------- header

// Header holds the request headers as received: name -> list of values. Get, Values and
// Lookup match names without regard to case, as in HTTP.
type Header struct {
	values map[string][]string
	folded map[string]string // lower-case name -> the first received name of that spelling
}

// NewHeader makes a Header from name -> values (for an action's own tests).
func NewHeader(values map[string][]string) Header {
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	return newHeader(names, values)
}

func newHeader(order []string, values map[string][]string) Header {
	h := Header{values: make(map[string][]string, len(values)), folded: map[string]string{}}
	for _, name := range order {
		vs, ok := values[name]
		if !ok {
			continue
		}
		h.values[name] = append(make([]string, 0, len(vs)), vs...)
		lower := strings.ToLower(name)
		if _, seen := h.folded[lower]; !seen {
			h.folded[lower] = name
		}
	}
	return h
}

func (h Header) lookupOK(name string) ([]string, bool) {
	if vs, ok := h.values[name]; ok {
		return vs, true
	}
	if original, ok := h.folded[strings.ToLower(name)]; ok {
		return h.values[original], true
	}
	return nil, false
}

func (h Header) lookup(name string) []string {
	vs, _ := h.lookupOK(name)
	return vs
}

// Get gives the first value of the header name, or "" when it is absent.
func (h Header) Get(name string) string {
	if vs := h.lookup(name); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// Lookup gives the first value of the header name and whether the header has a value.
func (h Header) Lookup(name string) (string, bool) {
	if vs := h.lookup(name); len(vs) > 0 {
		return vs[0], true
	}
	return "", false
}

// Values gives every value of the header name (a copy; nil when the header is absent).
func (h Header) Values(name string) []string {
	vs, ok := h.lookupOK(name)
	if !ok {
		return nil
	}
	return append(make([]string, 0, len(vs)), vs...)
}

// Items gives every header as received: name -> list of values (a copy).
func (h Header) Items() map[string][]string {
	out := make(map[string][]string, len(h.values))
	for k, vs := range h.values {
		out[k] = append(make([]string, 0, len(vs)), vs...)
	}
	return out
}

// Keys gives the header names, as received (same case), sorted.
func (h Header) Keys() []string {
	keys := make([]string, 0, len(h.values))
	for k := range h.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Len is the number of headers.
func (h Header) Len() int { return len(h.values) }

// ----------------------------------------------------------------------------- log

// Logger records the action's logs. Each call is one log of that level, in call order;
// the content is formatted like fmt.Sprint (or fmt.Sprintf for the f variants) and cut to
// 8,000 characters. It is safe to use from several goroutines.
type Logger struct {
	send     func(level, content string)
	maxChars int
}

// NewLogger makes a Logger that hands each log to send (for an action's own tests).
func NewLogger(send func(level, content string)) *Logger {
	return &Logger{send: send, maxChars: LogContentMax}
}

func (l *Logger) emit(level, content string) {
	if l == nil || l.send == nil {
		return
	}
	l.send(level, wire.Truncate(content, l.maxChars))
}

// Debug records a debug log: fmt.Sprint(args...).
func (l *Logger) Debug(args ...any) { l.emit("debug", fmt.Sprint(args...)) }

// Info records an info log: fmt.Sprint(args...).
func (l *Logger) Info(args ...any) { l.emit("info", fmt.Sprint(args...)) }

// Error records an error log: fmt.Sprint(args...). It does not fail the run.
func (l *Logger) Error(args ...any) { l.emit("error", fmt.Sprint(args...)) }

// Debugf records a debug log: fmt.Sprintf(format, args...).
func (l *Logger) Debugf(format string, args ...any) { l.emit("debug", fmt.Sprintf(format, args...)) }

// Infof records an info log: fmt.Sprintf(format, args...).
func (l *Logger) Infof(format string, args ...any) { l.emit("info", fmt.Sprintf(format, args...)) }

// Errorf records an error log: fmt.Sprintf(format, args...). It does not fail the run.
func (l *Logger) Errorf(format string, args ...any) { l.emit("error", fmt.Sprintf(format, args...)) }

// ----------------------------------------------------------------------------- result

// Option changes how Result.Set records the value.
type Option func(*resultOptions)

type resultOptions struct {
	statusCode  int
	contentType string
}

// WithStatusCode sets the HTTP status of the response (200-599; default 200).
func WithStatusCode(code int) Option {
	return func(o *resultOptions) { o.statusCode = code }
}

// WithContentType sets the response's content type: "text" (default), "json" or "html".
func WithContentType(contentType string) Option {
	return func(o *resultOptions) { o.contentType = contentType }
}

// Result is the action's response. Not setting it gives an empty text result with status 200.
type Result struct {
	mu          sync.Mutex
	value       string
	statusCode  int
	contentType string
	err         error // the last Set call's error, until a later call succeeds
	// Legacy mode (a code adopted from the old service): an unknown content type answers
	// text and a status outside 200-599 answers 200 instead of an error; note tells the
	// code's owner what was mapped (a debug log).
	legacy bool
	note   func(message string)
}

// mimeKinds maps MIME names to the engine's content types (legacy mode).
var mimeKinds = map[string]string{
	"application/json":      ContentJSON,
	"text/json":             ContentJSON,
	"text/html":             ContentHTML,
	"application/xhtml+xml": ContentHTML,
	"text/plain":            ContentText,
}

// legacyKind is the content type legacy mode answers for a name that is not one of ours.
func legacyKind(kind string) string {
	media := strings.TrimSpace(strings.SplitN(kind, ";", 2)[0])
	if mapped, ok := mimeKinds[media]; ok {
		return mapped
	}
	if strings.HasSuffix(media, "+json") {
		return ContentJSON
	}
	return ""
}

// NewResult makes an empty Result (for an action's own tests).
func NewResult() *Result { return &Result{statusCode: 200, contentType: ContentText} }

// Set records the response; a later call replaces it. A string is kept as is, a []byte is
// taken as text, an error gives its message, anything else is JSON-encoded (falling back to
// fmt.Sprint when it cannot be). An invalid status code or content type returns an error, leaves the earlier result
// in place and fails the run unless a later Set succeeds.
func (r *Result) Set(value any, opts ...Option) error {
	if r == nil {
		return errors.New("codeactions: nil Result")
	}
	o := resultOptions{statusCode: 200, contentType: ContentText}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	kind := strings.ToLower(strings.TrimSpace(o.contentType))
	validKind := kind == ContentText || kind == ContentJSON || kind == ContentHTML
	validCode := o.statusCode >= 200 && o.statusCode <= 599
	if r.legacy && !validKind {
		if mapped := legacyKind(kind); mapped != "" {
			r.tell(fmt.Sprintf("result.Set: content type %q taken as %q (legacy mode; the "+
				"engine's names are text, json and html)", o.contentType, mapped))
			kind = mapped
		} else {
			r.tell(fmt.Sprintf("result.Set: content type %q is not text, json or html: "+
				"answered as text/plain (legacy mode)", o.contentType))
			kind = ContentText
		}
		validKind = true
	}
	if r.legacy && !validCode {
		r.tell(fmt.Sprintf("result.Set: status code %d is not an HTTP status (200-599): "+
			"answered 200 (legacy mode)", o.statusCode))
		o.statusCode, validCode = 200, true
	}
	var err error
	switch {
	case !validKind:
		err = fmt.Errorf("content type must be one of text, json, html; got %q", o.contentType)
	case !validCode:
		err = fmt.Errorf("status code must be an HTTP status (200-599); got %d", o.statusCode)
	}
	text := ""
	if err == nil {
		text = stringify(value)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
	if err != nil {
		return err
	}
	r.value, r.statusCode, r.contentType = text, o.statusCode, kind
	return nil
}

// Value is the recorded value, as sent.
func (r *Result) Value() string { r.mu.Lock(); defer r.mu.Unlock(); return r.value }

// StatusCode is the recorded HTTP status.
func (r *Result) StatusCode() int { r.mu.Lock(); defer r.mu.Unlock(); return r.statusCode }

// ContentType is the recorded content type.
func (r *Result) ContentType() string { r.mu.Lock(); defer r.mu.Unlock(); return r.contentType }

func (r *Result) tell(message string) {
	if r.note != nil {
		r.note(message)
	}
}

func (r *Result) snapshot() (value string, statusCode int, contentType string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.value, r.statusCode, r.contentType, r.err
}

func stringify(value any) (text string) {
	switch v := value.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case error:
		return errorMessage(v) // encoding/json would give "{}"
	}
	defer func() {
		// A MarshalJSON or String method of the user's type may panic: fall back, then give up.
		if recover() != nil {
			text = fmt.Sprint(value) // fmt recovers from panics in String methods itself
		}
	}()
	if data, err := wire.Marshal(value); err == nil {
		return string(data)
	}
	return fmt.Sprint(value)
}
