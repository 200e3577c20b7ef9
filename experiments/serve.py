"""Draw a sloppy outline in the browser, get the cut-out.

  python -m experiments.serve --workdir=runs/cat              # a fitted run
  python -m experiments.serve --image=photo.jpg               # fit first (snap config:
                                                               # the best net on sloppy
                                                               # outlines), saved to
                                                               # runs/photo
Then open the printed address. Listens on 127.0.0.1 unless --host says otherwise.
"""
import os

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli
from experiments.web import server
from singleseg_jax.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory (fitted, or where to fit --image).")
flags.DEFINE_string("image", None, "A photo to fit first (then --config applies).")
config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "configs",
                                                       "snap.py"),
                                "Config for fitting --image (default: the snap variant, "
                                "the best net on sloppy outlines; configs/demo.py for the "
                                "paper's).")
flags.DEFINE_string("upload_dir", os.path.join("runs", "uploads"),
                    "Where photos uploaded from the page, and their runs, are kept ('' "
                    "turns uploads off); they are fitted with --config.")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (loopback by default).")
flags.DEFINE_integer("port", 8000, "Port (0 picks a free one).", lower_bound=0,
                     upper_bound=65535)


def main(argv):
  del argv
  if FLAGS.image is None and FLAGS.workdir is None:
    raise InputError("give --workdir (a fitted run) or --image (a photo to fit)")
  config = None
  workdir = FLAGS.workdir
  if FLAGS.image is not None:
    config = FLAGS.config
    config.image = FLAGS.image
    workdir = workdir or os.path.join("runs", os.path.splitext(os.path.basename(FLAGS.image))[0])
  app = server.App(workdir, config, fit_config=FLAGS.config,
                   upload_dir=FLAGS.upload_dir or None)
  httpd = server.make_server(app, FLAGS.host, FLAGS.port)
  app.check()  # the photo, the config or the run: one error line before anything starts
  app.start()
  if FLAGS.host not in ("127.0.0.1", "localhost", "::1"):
    logging.warning("listening on %s: anyone who can reach it can use the server", FLAGS.host)
  host, port = httpd.server_address[:2]
  print(f"serving {workdir} at http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    httpd.server_close()


if __name__ == "__main__":
  cli.run(main)
