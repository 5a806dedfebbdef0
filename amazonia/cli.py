"""``amazonia``: the command line of the serving side.

* ``amazonia serve``: TF Serving's REST API over ``models/<name>/`` (see :mod:`amazonia.serving`);
* ``amazonia predict IMAGE...``: tags for image files from a running server.

Defaults come from ``params.yaml`` in the working directory (section ``serve`` and
``export.model_name``), else from the built-in defaults. Errors a user can fix are
one line, ``error: ...``, and exit status 1 (2 for a malformed command line).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amazonia.common.errors import AmazoniaError
from amazonia.common.params import PARAMS_FILE, Params, load_params
from amazonia.common.paths import MODELS_DIR
from amazonia.common.tf_logging import quiet_tensorflow_logs
from amazonia.serving.params import MAX_SECONDS, MIN_SECONDS, ServeParams, check_value, load_serve_params

if TYPE_CHECKING:
    from amazonia.serving.model_config import ModelSource

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    quiet_tensorflow_logs()  # before `serve` loads TensorFlow
    try:
        params = load_params() if PARAMS_FILE.is_file() else Params()
        args = build_parser(params).parse_args(argv)
        _configure_logging(args.verbose)
        return args.run(args)
    except AmazoniaError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser(params: Params) -> argparse.ArgumentParser:
    """The argument parser, its defaults taken from ``params``."""
    serve = load_serve_params(params.serve, str(PARAMS_FILE))
    parser = argparse.ArgumentParser(prog="amazonia", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands, params, serve)
    _add_predict(commands, params, serve)
    return parser


def _add_serve(commands: argparse._SubParsersAction, params: Params, serve: ServeParams) -> None:
    name = params.export.model_name
    parser = commands.add_parser(
        "serve",
        help="serve models/<name>/ over TensorFlow Serving's REST API",
        description="Serve every version folder of models/<name>/ over TF Serving's REST API "
        "(the highest by default), or the models of a TF Serving model config file; new versions "
        "are picked up while it runs.",
        epilog="Defaults, and the limits without a flag (write timeout, unsent answer bytes, instances and "
        "decoded pixels per request, header size, shutdown grace), come from serve: in params.yaml; "
        "see docs/serving.md.",
    )
    parser.add_argument("--model-name", help=f"name in the URLs (default {name})")
    parser.add_argument(
        "--model-base-path",
        type=Path,
        help=f"folder of the version folders (default {MODELS_DIR}/<model-name>)",
    )
    parser.add_argument(
        "--model_config_file",
        "--model-config-file",
        type=Path,
        help="TF Serving's model config file (model_config_list: models, version policies, version "
        "labels), instead of --model-name and --model-base-path",
    )
    parser.add_argument(
        "--model_config_file_poll_wait_seconds",
        "--model-config-file-poll-wait-seconds",
        type=_poll_wait,
        default=0.0,
        metavar="SECONDS",
        help="re-read the model config file this often (default 0: read it once)",
    )
    parser.add_argument(
        "--allow_version_labels_for_unavailable_models",
        "--allow-version-labels-for-unavailable-models",
        type=_true_or_false,
        nargs="?",
        const=True,
        default=False,
        metavar="true|false",
        help="let a new version label name a version not loaded (yet)",
    )
    parser.add_argument(
        "--host",
        type=_serve_flag("host", str),
        default=serve.host,
        help=f"address to bind (default {serve.host})",
    )
    parser.add_argument(
        "--port", type=_serve_flag("port", int), default=serve.port, help=f"REST port (default {serve.port})"
    )
    parser.add_argument(
        "--poll-seconds",
        type=_serve_flag("poll_seconds", float),
        default=serve.poll_seconds,
        help=f"how often to look for new versions (default {serve.poll_seconds:g})",
    )
    parser.add_argument(
        "--max-body-mb",
        type=_serve_flag("max_body_mb", float),
        default=serve.max_body_mb,
        help=f"larger requests, also once gunzipped, are answered 413 (default {serve.max_body_mb:g})",
    )
    parser.add_argument(
        "--read-timeout",
        type=_serve_flag("read_timeout_seconds", float),
        default=serve.read_timeout_seconds,
        help="seconds a request's head, then its body, may take to arrive "
        f"(default {serve.read_timeout_seconds:g})",
    )
    parser.add_argument(
        "--keep-alive",
        type=_serve_flag("keep_alive_seconds", float),
        default=serve.keep_alive_seconds,
        help=f"seconds an idle connection is kept open (default {serve.keep_alive_seconds:g})",
    )
    parser.add_argument(
        "--max-connections",
        type=_serve_flag("max_connections", int),
        default=serve.max_connections,
        help=f"more at once are answered 503 (default {serve.max_connections})",
    )
    # TF Serving's flag names, underscores included, so that its command lines carry over.
    parser.add_argument(
        "--enable_batching",
        nargs="?",
        const=True,
        type=_flag_bool,
        default=serve.enable_batching,
        metavar="true|false",
        help="batch concurrent requests for one signature into shared model calls "
        f"(default {str(serve.enable_batching).lower()})",
    )
    parser.add_argument(
        "--batching_parameters_file",
        type=_serve_flag("batching_parameters_file", str),
        default=serve.batching_parameters_file,
        metavar="FILE",
        help="TF Serving's BatchingParameters in text format (default: TF Serving's defaults)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log loads, every request and every batch"
    )
    parser.set_defaults(run=run_serve, serve_params=serve, default_model_name=name)


def _add_predict(commands: argparse._SubParsersAction, params: Params, serve: ServeParams) -> None:
    from amazonia.client.predict import DEFAULT_TIMEOUT_S

    host = "127.0.0.1" if serve.host in ("0.0.0.0", "::", "") else serve.host
    url = f"http://{host}:{serve.port}/v1/models/{params.export.model_name}"
    parser = commands.add_parser(
        "predict",
        help="tag image files with a served model",
        description="Send image files (JPEG, PNG, any size) to the served model and print their "
        "weather tag and the ground tags at or above their thresholds.",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument(
        "--url",
        default=url,
        help=f"the model's URL (default {url}); may end in /versions/<n> or /labels/<label>",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of one line per image")
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="read the label map and thresholds from this models/<name>/ (or version) folder instead "
        "of the server: needed with real TF Serving",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds each request may take in all: connect, send, the whole answer "
        f"(default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is sent")
    parser.set_defaults(run=run_predict)


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    sources = _model_sources(args)
    settings = args.serve_params.model_copy(
        update={
            "host": args.host,
            "port": args.port,
            "poll_seconds": args.poll_seconds,
            "max_body_mb": args.max_body_mb,
            "read_timeout_seconds": args.read_timeout,
            "keep_alive_seconds": args.keep_alive,
            "max_connections": args.max_connections,
            "enable_batching": args.enable_batching,
            "batching_parameters_file": args.batching_parameters_file,
        }
    )
    from amazonia.serving.batching_parameters import load_batching_parameters

    load_batching_parameters(settings)  # a bad file is refused before anything loads
    # Before TensorFlow loads (seconds) and the model (more): a port in use fails at once.
    sock = bind(args.host, args.port)
    # Imported here: TensorFlow takes seconds to load and 'predict' does not need the server.
    from amazonia.serving.manager import ModelManager
    from amazonia.serving.metrics import ServingMetrics
    from amazonia.serving.server import create_app, serve

    models = ModelManager(
        sources,
        settings.poll_seconds,
        config_file=args.model_config_file,
        config_poll_seconds=args.model_config_file_poll_wait_seconds,
        allow_labels_for_unavailable_versions=args.allow_version_labels_for_unavailable_models,
        max_saved_model_bytes=settings.max_saved_model_mb * 2**20,
        metrics=ServingMetrics(),
    )
    models.load()  # before the socket listens: until then, clients are refused
    app = create_app(models, settings)
    for source in sources:
        log.info("serving %s as %r on http://%s:%d", source.base_path, source.name, args.host, args.port)
    serve(app, sock, settings, verbose=args.verbose)
    return 0


def _model_sources(args: argparse.Namespace) -> tuple[ModelSource, ...]:
    """The models to serve: those of the model config file, or the one folder."""
    from amazonia.serving.model_config import ModelSource, read_model_config

    if args.model_config_file is not None:
        given = [
            flag
            for flag, value in (
                ("--model-name", args.model_name),
                ("--model-base-path", args.model_base_path),
            )
            if value
        ]
        if given:
            raise AmazoniaError(
                f"{' and '.join(given)} cannot go with --model_config_file, which names every model and its "
                "base_path; drop them"
            )
        sources = read_model_config(args.model_config_file)
        if not sources:
            raise AmazoniaError(
                f"{args.model_config_file}: the model config file names no model; list them in "
                "model_config_list { config { name: ... base_path: ... } }"
            )
        return sources
    name = args.model_name or args.default_model_name
    base = args.model_base_path or MODELS_DIR / name
    if not base.is_dir():
        raise AmazoniaError(
            f"{base}: no such folder; export a model first ('dvc repro export') or pass --model-base-path"
        )
    return (ModelSource(name, base),)


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` for the server; an error naming the address if it
    is taken, not this machine's, or a name that does not resolve."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except (OSError, UnicodeError) as err:  # gaierror; IDNA's for a label over 63 characters
        raise AmazoniaError(
            f"cannot listen on {host}:{port}: {getattr(err, 'strerror', None) or err}; pass another --host"
        ) from None
    # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY only on sockets that say they
    # are TCP, and without it Nagle and delayed ACKs add ~40 ms to every answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart at once
    try:
        # Not listen() yet: until the model has loaded, clients are refused, not left waiting.
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        hint = _BIND_HINTS.get(err.errno, "pass another --host or --port")
        raise AmazoniaError(f"cannot listen on {host}:{port}: {err.strerror or err}; {hint}") from None
    return sock


_BIND_HINTS = {
    errno.EADDRINUSE: "is another server there? Stop it, or pass --port (or --host)",
    errno.EACCES: "ports below 1024 need privileges: pass --port",
    errno.EADDRNOTAVAIL: "not an address of this machine: pass --host",
}


def run_predict(args: argparse.Namespace) -> int:
    """Print the tags of each image as its answer arrives."""
    import signal

    from amazonia.client.predict import predict_files

    tagged = predict_files(args.images, args.url, model_dir=args.model_dir, timeout=args.timeout)
    try:
        if args.json:
            # The array json.dumps(..., indent=2) writes, one item at a time.
            opening = "["
            for result in tagged:
                item = json.dumps(result.to_json(), indent=2).replace("\n", "\n  ")
                print(f"{opening}\n  {item}", end="", flush=True)
                opening = ","
            print("\n]" if opening == "," else "[]", flush=True)
        else:
            for result in tagged:
                print(result.describe(), flush=True)
    except BrokenPipeError:
        # The reader went away (`amazonia predict ... | head -1`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return 0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number > 0")
    return value


def _poll_wait(text: str) -> float:
    """0 (never), or seconds between polls within serve's bounds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value == 0:
        return 0.0
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text} must be 0 (read once) or {MIN_SECONDS:g} to {MAX_SECONDS:g}"
        )
    return value


def _true_or_false(text: str) -> bool:
    """A TF Serving boolean flag's value (``--flag=true``)."""
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is neither true nor false")


def _seconds(text: str) -> float:
    value = _positive_float(text)
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} is more than a day ({MAX_SECONDS:g} s)")
    return value


def _flag_bool(text: str) -> bool:
    """A boolean flag's value as TF Serving's flag parser reads it: true/false, 1/0."""
    value = {"true": True, "1": True, "false": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is neither true nor false")
    return value


def _serve_flag(key: str, kind: type) -> Callable[[str], Any]:
    """An argparse type for the flag of ``serve.<key>``: the value, checked against the key's
    bounds in the schema (a flag and its key take the same values)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole number' if kind is int else 'number'} (serve.{key})"
            ) from None
        try:
            return check_value(key, value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
