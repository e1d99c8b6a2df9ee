# corral running four copies of app.py.
#   corral run -config examples/python/config.hcl

listen = "127.0.0.1:8080"

app "python" {
  # No dir: it defaults to this file's directory, where app.py is.
  # -u: unbuffered, so worker log lines reach corral as they happen.
  command   = ["python3", "-u", "app.py"]
  instances = 4

  # The same app.py under gunicorn instead of http.server (pip install
  # gunicorn). One gunicorn worker per corral worker: corral does the
  # forking, balancing and restarts that gunicorn's master would.
  #
  #   command = ["gunicorn", "-b", "127.0.0.1:{port}", "-w", "1", "app:app"]

  health {
    path     = "/healthz"
    interval = "2s"
    timeout  = "1s"
  }
}
