package actors

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"

	"go.uber.org/zap"
)

// CrashLogHandler is the log handler of the node's actor system. An actor
// that panics is only logged by protoactor ("[ACTOR] Recovering") and its
// mailbox suspended or restarted, which would leave a shard or the oracle
// silently dead or reset in memory; this handler instead logs the panic
// with its stack and stops the process, so that it restarts from durable
// state. Other records at error level are logged; the rest are dropped.
type CrashLogHandler struct{ Logger *zap.Logger }

func (h CrashLogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h CrashLogHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "[ACTOR] Recovering" {
		fields := []zap.Field{zap.ByteString("stack", debug.Stack())}
		r.Attrs(func(a slog.Attr) bool {
			fields = append(fields, zap.String(a.Key, a.Value.String()))
			return true
		})
		h.Logger.Error("an actor panicked; stopping the process", fields...)
		_ = h.Logger.Sync()
		os.Exit(2)
	}
	if r.Level >= slog.LevelError {
		h.Logger.Error(r.Message)
	}
	return nil
}

func (h CrashLogHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h CrashLogHandler) WithGroup(string) slog.Handler      { return h }
