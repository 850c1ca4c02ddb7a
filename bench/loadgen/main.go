// Command loadgen is the open-loop load generator of bench/mesh.bench.ts: HTTP/1.1 GETs at a fixed
// rate over a fixed set of keep-alive connections, on loopback only, standard library only.
//
// Open loop: request i is due at start + i/rate, whatever happened to the ones before it. A
// dispatcher hands each due request to the first free connection; when every connection is busy
// the request waits, and its latency still runs from the time it was due (the coordinated-omission
// correction of wrk2 and fortio: a stall of the server shows as the latency of every request that
// should have been sent during it, not only of the one that was in flight).
//
// The dispatcher sleeps with nanosleep(2) on a thread of its own (timer slack 1 µs): Go's own
// timers wake up to a millisecond late on Linux (the netpoller waits in whole milliseconds), which
// would be most of what is measured here. How late it woke is reported as schedLagMs.
//
// It prints one JSON object on stdout: counts, errors by kind (no response: connect, reset, closed,
// timeout, bad_response, not_sent; a response other than 2xx: status_<code>), and the latency
// quantiles of the 2xx responses in milliseconds, as bench/stats.ts defines them (the sorted
// samples' element at floor(q·n)); with -samples, every latency too, so that runs can be merged.
// Bounded: at most 120 s, 50,000 req/s, 512 connections and 5,000,000 requests; only addresses in
// 127.0.0.0/8.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	maxDuration = 120 * time.Second
	maxWarmup   = 30 * time.Second
	maxRate     = 50_000
	maxConns    = 512
	maxRequests = 5_000_000
	// Error events kept with their time, for the report.
	maxErrorEvents  = 20
	prSetTimerslack = 29
)

type options struct {
	target   *url.URL
	addr     string
	host     string
	rate     int
	duration time.Duration
	warmup   time.Duration
	conns    int
	timeout  time.Duration
	samples  bool
}

type errorEvent struct {
	AtMs    float64 `json:"atMs"`
	Kind    string  `json:"kind"`
	Message string  `json:"message"`
}

type quantiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

type result struct {
	URL          string         `json:"url"`
	Rate         int            `json:"rate"`
	DurationS    float64        `json:"durationS"`
	WarmupS      float64        `json:"warmupS"`
	Conns        int            `json:"conns"`
	Scheduled    int            `json:"scheduled"`
	OK           int            `json:"ok"`
	ErrorCount   int            `json:"errorCount"`
	Errors       map[string]int `json:"errors"`
	AchievedRate float64        `json:"achievedRate"`
	LatencyMs    quantiles      `json:"latencyMs"`
	SchedLagMs   quantiles      `json:"schedLagMs"`
	FirstErrors  []errorEvent   `json:"firstErrors"`
	Warmup       struct {
		OK     int `json:"ok"`
		Errors int `json:"errors"`
	} `json:"warmup"`
	Connects int `json:"connects"`
	// With -samples: every 2xx latency of the measured part, ns, in completion order per connection.
	SamplesNs []int64 `json:"samplesNs,omitempty"`
}

func main() {
	opts, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	out, err := json.Marshal(run(opts))
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}

func parseFlags() (options, error) {
	var o options
	rawURL := flag.String("url", "", "http://127.x.y.z:port/path to GET")
	flag.StringVar(&o.host, "host", "", "Host header (default: the URL's host)")
	flag.IntVar(&o.rate, "rate", 1000, "requests per second")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long to send (measured)")
	flag.DurationVar(&o.warmup, "warmup", 0, "how long to send before measuring (same rate, not recorded)")
	flag.IntVar(&o.conns, "conns", 16, "keep-alive connections")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Second, "per request: connect, then the whole response")
	flag.BoolVar(&o.samples, "samples", false, "print every latency (ns) too, for merging runs")
	flag.Parse()
	if flag.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "http" || u.Port() == "" {
		return o, fmt.Errorf("-url must be http://<IPv4 in 127.0.0.0/8>:<port>/path, got %q", *rawURL)
	}
	ip := net.ParseIP(u.Hostname()).To4()
	if ip == nil || ip[0] != 127 {
		return o, fmt.Errorf("-url: only addresses in 127.0.0.0/8, got %q", u.Hostname())
	}
	o.target = u
	o.addr = u.Host
	if o.host == "" {
		o.host = u.Host
	}
	switch {
	case o.rate < 1 || o.rate > maxRate:
		return o, fmt.Errorf("-rate must be 1..%d", maxRate)
	case o.duration <= 0 || o.duration > maxDuration:
		return o, fmt.Errorf("-duration must be above 0 and at most %s", maxDuration)
	case o.warmup < 0 || o.warmup > maxWarmup:
		return o, fmt.Errorf("-warmup must be 0..%s", maxWarmup)
	case o.conns < 1 || o.conns > maxConns:
		return o, fmt.Errorf("-conns must be 1..%d", maxConns)
	case o.timeout <= 0 || o.timeout > 30*time.Second:
		return o, errors.New("-timeout must be above 0 and at most 30s")
	}
	if float64(o.rate)*(o.duration+o.warmup).Seconds() > maxRequests {
		return o, fmt.Errorf("rate × (warmup + duration) is over %d requests", maxRequests)
	}
	return o, nil
}

// worker is one keep-alive connection and what it recorded.
type worker struct {
	conn     net.Conn
	reader   *bufio.Reader
	latency  []int64 // ns, 2xx responses of the measured part
	errors   map[string]int
	events   []errorEvent
	ok       int
	warmOK   int
	warmErr  int
	connects int
}

func run(o options) result {
	warmupCount := int(float64(o.rate) * o.warmup.Seconds())
	measured := int(float64(o.rate) * o.duration.Seconds())
	total := warmupCount + measured
	interval := float64(time.Second) / float64(o.rate)
	due := func(i int) time.Duration { return time.Duration(float64(i) * interval) }
	request := []byte("GET " + o.target.RequestURI() + " HTTP/1.1\r\nHost: " + o.host +
		"\r\nUser-Agent: orrery-loadgen\r\nAccept: */*\r\n\r\n")

	queue := make(chan int, 65_536)
	schedLag := make([]int64, 0, measured)
	start := time.Now().Add(20 * time.Millisecond)
	measuredStart := start.Add(due(warmupCount))
	// Past this, whatever is still queued is counted as not sent.
	hardStop := start.Add(due(total) + o.timeout + time.Second)

	go func() {
		runtime.LockOSThread()
		_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 1, 0)
		for i := range total {
			at := start.Add(due(i))
			if d := time.Until(at); d > 0 {
				ts := syscall.NsecToTimespec(int64(d))
				for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
				}
			}
			if i >= warmupCount {
				schedLag = append(schedLag, int64(time.Since(at)))
			}
			queue <- i
		}
		close(queue)
	}()

	workers := make([]*worker, o.conns)
	var wg sync.WaitGroup
	for c := range workers {
		w := &worker{errors: map[string]int{}, latency: make([]int64, 0, measured/o.conns+16)}
		workers[c] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range queue {
				at := start.Add(due(i))
				warm := i < warmupCount
				if time.Now().After(hardStop) {
					w.record(warm, "not_sent", errors.New("past the end of the run"), at.Sub(measuredStart))
					continue
				}
				status, body, err := w.do(o, request)
				done := time.Now()
				switch {
				case err != nil:
					w.close()
					w.record(warm, errorKind(err), err, at.Sub(measuredStart))
				case status < 200 || status > 299:
					err := fmt.Errorf("status %d: %q", status, body)
					w.record(warm, "status_"+strconv.Itoa(status), err, at.Sub(measuredStart))
				case warm:
					w.warmOK++
				default:
					w.ok++
					w.latency = append(w.latency, int64(done.Sub(at)))
				}
			}
			w.close()
		}()
	}
	wg.Wait()

	r := result{
		URL: o.target.String(), Rate: o.rate, DurationS: o.duration.Seconds(), WarmupS: o.warmup.Seconds(),
		Conns: o.conns, Scheduled: measured, Errors: map[string]int{}, FirstErrors: []errorEvent{},
	}
	var latency []int64
	for _, w := range workers {
		r.OK += w.ok
		r.Warmup.OK += w.warmOK
		r.Warmup.Errors += w.warmErr
		r.Connects += w.connects
		latency = append(latency, w.latency...)
		for k, n := range w.errors {
			r.Errors[k] += n
			r.ErrorCount += n
		}
		r.FirstErrors = append(r.FirstErrors, w.events...)
	}
	sort.Slice(r.FirstErrors, func(a, b int) bool { return r.FirstErrors[a].AtMs < r.FirstErrors[b].AtMs })
	if len(r.FirstErrors) > maxErrorEvents {
		r.FirstErrors = r.FirstErrors[:maxErrorEvents]
	}
	r.AchievedRate = float64(r.OK) / o.duration.Seconds()
	r.LatencyMs = summarize(latency)
	if o.samples {
		r.SamplesNs = latency
	}
	r.SchedLagMs = summarize(schedLag)
	return r
}

func (w *worker) record(warm bool, kind string, err error, at time.Duration) {
	if warm {
		w.warmErr++
		return
	}
	w.errors[kind]++
	if len(w.events) < maxErrorEvents {
		w.events = append(w.events, errorEvent{AtMs: float64(at) / 1e6, Kind: kind, Message: err.Error()})
	}
}

func (w *worker) close() {
	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
	}
}

// do sends one GET on the worker's connection (dialled first when there is none) and reads the
// whole response; the connection is closed after it when the server says so. The body is kept
// (its start) only when the status is not 2xx.
func (w *worker) do(o options, request []byte) (int, string, error) {
	deadline := time.Now().Add(o.timeout)
	if w.conn == nil {
		conn, err := net.DialTimeout("tcp4", o.addr, o.timeout)
		if err != nil {
			return 0, "", &dialError{err}
		}
		if tcp, ok := conn.(*net.TCPConn); ok {
			_ = tcp.SetNoDelay(true)
		}
		w.conn = conn
		w.connects++
		if w.reader == nil {
			w.reader = bufio.NewReaderSize(conn, 16<<10)
		} else {
			w.reader.Reset(conn)
		}
	}
	if err := w.conn.SetDeadline(deadline); err != nil {
		return 0, "", err
	}
	if _, err := w.conn.Write(request); err != nil {
		return 0, "", err
	}
	status, keepAlive, body, err := readResponse(w.reader)
	if err != nil {
		return 0, "", err
	}
	if !keepAlive {
		w.close()
	}
	return status, body, nil
}

type dialError struct{ err error }

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

var errBadResponse = errors.New("bad response")

// readResponse reads one HTTP/1.1 response (status line, headers, a Content-Length or chunked
// body); the body is discarded, but for the first bytes of one that is not 2xx and has a length.
func readResponse(r *bufio.Reader) (status int, keepAlive bool, body string, err error) {
	line, err := readLine(r)
	if err != nil {
		return 0, false, "", err
	}
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") || len(rest) < 3 {
		return 0, false, "", fmt.Errorf("%w: status line %q", errBadResponse, line)
	}
	status, err = strconv.Atoi(rest[:3])
	if err != nil {
		return 0, false, "", fmt.Errorf("%w: status line %q", errBadResponse, line)
	}
	keepAlive = proto == "HTTP/1.1"
	length := int64(-1)
	chunked := false
	for {
		h, err := readLine(r)
		if err != nil {
			return 0, false, "", err
		}
		if h == "" {
			break
		}
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return 0, false, "", fmt.Errorf("%w: header %q", errBadResponse, h)
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-length":
			length, err = strconv.ParseInt(value, 10, 64)
			if err != nil || length < 0 {
				return 0, false, "", fmt.Errorf("%w: content-length %q", errBadResponse, value)
			}
		case "transfer-encoding":
			chunked = strings.Contains(strings.ToLower(value), "chunked")
		case "connection":
			v := strings.ToLower(value)
			if strings.Contains(v, "close") {
				keepAlive = false
			} else if strings.Contains(v, "keep-alive") {
				keepAlive = true
			}
		}
	}
	switch {
	case status == 204 || status == 304 || (status >= 100 && status < 200):
	case chunked:
		if err := discardChunked(r); err != nil {
			return 0, false, "", err
		}
	case length >= 0 && (status < 200 || status > 299) && length <= 4096:
		buf := make([]byte, length)
		if _, err := io.ReadFull(r, buf); err != nil {
			return 0, false, "", err
		}
		body = string(buf[:min(len(buf), 200)])
	case length >= 0:
		if _, err := r.Discard(int(length)); err != nil {
			return 0, false, "", err
		}
	default: // the body runs to the end of the connection
		if _, err := io.Copy(io.Discard, r); err != nil {
			return 0, false, "", err
		}
		keepAlive = false
	}
	return status, keepAlive, body, nil
}

func discardChunked(r *bufio.Reader) error {
	for {
		line, err := readLine(r)
		if err != nil {
			return err
		}
		sizeText, _, _ := strings.Cut(line, ";")
		size, err := strconv.ParseInt(strings.TrimSpace(sizeText), 16, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("%w: chunk size %q", errBadResponse, line)
		}
		if size == 0 {
			for { // trailers, then the empty line
				t, err := readLine(r)
				if err != nil {
					return err
				}
				if t == "" {
					return nil
				}
			}
		}
		if _, err := r.Discard(int(size) + 2); err != nil {
			return err
		}
	}
}

func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", fmt.Errorf("%w: a line over %d bytes", errBadResponse, r.Size())
		}
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

func errorKind(err error) string {
	var dial *dialError
	var netErr net.Error
	switch {
	case errors.As(err, &dial):
		if errors.Is(err, syscall.ECONNREFUSED) {
			return "connect_refused"
		}
		if errors.As(err, &netErr) && netErr.Timeout() {
			return "connect_timeout"
		}
		return "connect_other"
	case errors.Is(err, errBadResponse):
		return "bad_response"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	default:
		return "other"
	}
}

func summarize(samples []int64) quantiles {
	if len(samples) == 0 {
		return quantiles{}
	}
	s := append([]int64(nil), samples...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	at := func(q float64) float64 {
		i := int(q * float64(len(s)))
		if i > len(s)-1 {
			i = len(s) - 1
		}
		return float64(s[i]) / 1e6
	}
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	return quantiles{
		P50: at(0.5), P90: at(0.9), P99: at(0.99), P999: at(0.999),
		Max: float64(s[len(s)-1]) / 1e6, Mean: sum / float64(len(s)) / 1e6,
	}
}
