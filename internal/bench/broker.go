package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/ampstream/ampstream/internal/sandbox"
)

// brokerLine prefixes the line on which a broker child announces its
// address.
const brokerLine = "BROKER "

// ServeBroker runs the benchmark's kfake broker until ctx ends or stdin
// closes (the parent benchmark exited), after printing "BROKER <addr>" to
// stdout. It is the child process that startChildBroker starts: kfake in
// a process of its own, so that its heap and garbage collector are not the
// forwarders'.
func ServeBroker(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	k, err := sandbox.StartKafka(nil)
	if err != nil {
		return err
	}
	defer k.Close()
	if _, err := fmt.Fprintf(stdout, "%s%s\n", brokerLine, strings.Join(k.Brokers, ",")); err != nil {
		return err
	}
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-ctx.Done():
	case <-eof:
	}
	return nil
}

// childBroker is a broker child process (ServeBroker) of the benchmark.
type childBroker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
}

// startChildBroker starts exe with args (a command that ends up in
// ServeBroker) and waits for its address.
func startChildBroker(ctx context.Context, exe string, args ...string) (*childBroker, error) {
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start broker child: %w", err)
	}
	b := &childBroker{cmd: cmd, stdin: stdin}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), brokerLine); ok {
				line <- s
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		close(line)
	}()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	select {
	case s, ok := <-line:
		if ok {
			b.addr = s
			return b, nil
		}
		b.close()
		return nil, errors.New("broker child exited before printing its address")
	case <-ctx.Done():
		b.close()
		return nil, fmt.Errorf("broker child: no address: %w", ctx.Err())
	}
}

// usage adds the child's CPU time and minor page faults so far to u.
func (b *childBroker) usage(u usage) usage {
	u.brokerCPU, u.brokerMinflt, _ = procStat(strconv.Itoa(b.cmd.Process.Pid))
	return u
}

// close ends the child (closing its stdin asks it to stop) and waits.
func (b *childBroker) close() {
	_ = b.stdin.Close()
	done := make(chan struct{})
	go func() {
		_ = b.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-done
	}
}
