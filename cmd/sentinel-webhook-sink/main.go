// Command sentinel-webhook-sink is a customer endpoint for trying sentinel
// out: it verifies the signatures of every webhook sentinel delivers and
// prints each event as it arrives, one line each. It also prints the
// notifications of an Alertmanager receiver pointed at it, where PagerDuty
// or Slack would be. `make demo` runs it; it is no production receiver
// (no persistence: duplicate eventIds are remembered in memory only).
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"

	"github.com/agentsentinel/sentinel/webhook"
)

func main() { os.Exit(run()) }

func run() int {
	app := kingpin.New("sentinel-webhook-sink", "Verifies and prints sentinel's signed webhooks, and Alertmanager's notifications.")
	app.Version(version.Print("sentinel-webhook-sink"))
	app.HelpFlag.Short('h')
	var logConfig promslog.Config
	promslogflag.AddFlags(app, &logConfig)
	var (
		listen = app.Flag("web.listen-address", "Address to listen on.").
			Default("127.0.0.1:9999").String()
		hookPath = app.Flag("webhook.path", "Path of sentinel's tenant webhook (webhook.url).").
				Default("/sentinel-webhook").String()
		amPath = app.Flag("alertmanager.path", "Path of an Alertmanager webhook_config receiver.").
			Default("/alertmanager").String()
		secrets = app.Flag("webhook.secret", "Webhook secret (the tenant's webhook.secrets); repeat while rotating. Prefer the environment variable: flags show in ps.").
			Envar("SENTINEL_WEBHOOK_SECRET").PlaceHolder("SECRET").Strings()
	)
	if _, err := app.Parse(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "sentinel-webhook-sink: error: %v, try --help\n", err)
		return 2
	}
	logger := promslog.New(&logConfig)
	if len(*secrets) == 0 {
		fmt.Fprintln(os.Stderr, "sentinel-webhook-sink: error: no secret: set SENTINEL_WEBHOOK_SECRET or --webhook.secret, try --help")
		return 2
	}
	verifier, err := webhook.NewVerifier(*secrets...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sentinel-webhook-sink: error: %v\n", err)
		return 2
	}

	s := newSink(verifier, os.Stdout, time.Now)
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+*hookPath, s.serveWebhook)
	mux.HandleFunc("POST "+*amPath, s.serveAlertmanager)
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "OK") })

	l, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Error("Cannot listen", "address", *listen, "err", err)
		return 1
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	logger.Info("Listening", "address", l.Addr().String(), "webhook_path", *hookPath, "alertmanager_path", *amPath)
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Error("Serve", "err", err)
		return 1
	}
	return 0
}
