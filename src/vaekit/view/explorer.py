"""``vaekit explore``: a local web page for walking through a trained model's latent space.

Sliders set each latent coordinate (ordered by KL, active dimensions first), a click on the 2-D
map of test-set posterior means jumps to that point, and a test example can be picked to start
from its encoding; the decoded mean E[x|z] is redrawn on every change.

The server is Python's own ``http.server`` (a ``ThreadingHTTPServer``): the page needs three
small JSON endpoints and three static files, so a web framework would add a dependency and
nothing else. It listens on 127.0.0.1 unless told otherwise, serves only the files listed in
:data:`STATIC`, and the page loads nothing from outside (it works offline).

Endpoints: ``GET /api/info`` (dimensions, KL order, slider range, the map),
``POST /api/decode`` with ``{"z": [...]}`` (the decoded example; a conditional model's with
``"label": c``, chosen on the page's class selector), ``GET /api/example?index=i``
(a test example and its posterior mean)."""

from __future__ import annotations

import base64
import io
import json
import math
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import torch

from ..errors import ConfigError

STATIC = {  # URL path -> (file in vaekit/static, content type)
    "/": ("explorer.html", "text/html; charset=utf-8"),
    "/explorer.js": ("explorer.js", "text/javascript; charset=utf-8"),
    "/explorer.css": ("explorer.css", "text/css; charset=utf-8"),
}
MAX_MAP_POINTS = 2000
MAX_BODY_BYTES = 1 << 20
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def image_png(x: torch.Tensor) -> bytes:
    """PNG bytes of one image ``[C, H, W]`` with values in [0, 1], at its own resolution."""
    from PIL import Image

    from .images import make_grid

    buffer = io.BytesIO()
    Image.fromarray(make_grid(x[None], nrow=1, padding=0)).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class RequestError(Exception):
    """A bad request: answered with status 400 and ``{"error": message}``."""


class LatentSpace:
    """What the page shows, computed once from a model and its test split; the methods answer
    the API calls (plain dicts in, plain dicts out, no HTTP)."""

    def __init__(self, model, test_x: torch.Tensor, test_labels: torch.Tensor | None = None,
                 *, name: str = "", is_image: bool | None = None,
                 class_names: tuple[str, ...] | None = None) -> None:
        from ..evaluation import latent_summary
        from .plots import project_2d, traversal_order

        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.test_x, self.test_labels = test_x, test_labels
        self.is_image = len(model.data_shape) == 3 if is_image is None else bool(is_image)
        self.lock = threading.Lock()  # one forward pass at a time (server threads share the model)
        # a model conditioned on class labels: decoded with a class
        self.num_classes = model.num_classes if model.condition_kind == "labels" else None
        if model.condition_kind == "covariates":
            raise ConfigError("the explorer does not show models conditioned on covariates "
                              "(--condition-columns) yet; use vaekit sample --condition")
        # a conditional model's codes are given the test labels: E_q[z | x, y]
        summary = latent_summary(model, test_x, labels=test_labels if self.num_classes else None)
        self.means = summary.means  # [N, L]
        kl = summary.kl_per_dim
        self.kl = kl.tolist() if kl is not None else None
        self.order = traversal_order(self.kl, model.latent_dims[-1])
        self.projection = project_2d(self.means[:MAX_MAP_POINTS].numpy())
        extent = float(self.means.abs().max()) if len(self.means) else 0.0
        self.limit = max(3.0, math.ceil(extent))  # slider range [-limit, limit]
        self.name = name
        self.class_names = list(class_names) if class_names is not None else None

    def info(self) -> dict:
        p = self.projection
        labels = self.test_labels[: len(p.points)].tolist() if self.test_labels is not None else None
        return {
            "run": self.name, "latent_dim": self.model.latent_dims[-1],
            "data_shape": list(self.model.data_shape), "is_image": self.is_image,
            "order": self.order, "kl_per_dim": self.kl, "limit": self.limit,
            "num_examples": len(self.test_x), "class_names": self.class_names,
            "conditional": bool(self.num_classes), "num_classes": self.num_classes,
            "map": {"name": p.name, "points": p.points.round(4).tolist(), "labels": labels,
                    "mean": p.mean.tolist(), "components": p.components.tolist()},
        }

    def parse_z(self, body: dict) -> torch.Tensor:
        z = body.get("z") if isinstance(body, dict) else None
        latent_dim = self.model.latent_dims[-1]  # the top stochastic layer
        if not isinstance(z, list) or len(z) != latent_dim or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in z):
            raise RequestError(f'expected {{"z": [{latent_dim} finite numbers]}}')
        return torch.tensor(z, dtype=torch.float32)

    @torch.no_grad()
    def decode(self, body: dict) -> dict:
        """E[x|z] of the posted code: ``{"image": PNG data URI}`` or ``{"values": [...]}``."""
        z = self.parse_z(body)
        condition = {}
        if self.num_classes:  # decoded with the posted class (default 0)
            label = body.get("label", 0)
            if isinstance(label, bool) or not isinstance(label, int) \
                    or not 0 <= label < self.num_classes:
                raise RequestError(f'"label" must be a class 0..{self.num_classes - 1}')
            condition = {"y": torch.tensor([label])}
        with self.lock:
            x = self.model.to_unit(
                self.model.decode_codes(z[None].to(self.device), **condition).mean[0]).cpu()
        return self._example_payload(x)

    @torch.no_grad()
    def example(self, index: int) -> dict:
        """Test example ``index``, its label and its posterior mean E_q[z|x]."""
        if not 0 <= index < len(self.test_x):
            raise RequestError(f"example index must be in 0..{len(self.test_x) - 1}, got {index}")
        label = int(self.test_labels[index]) if self.test_labels is not None else None
        return {"index": index, "label": label, "z": self.means[index].tolist(),
                **self._example_payload(self.model.to_unit(self.test_x[index]))}

    def _example_payload(self, x: torch.Tensor) -> dict:
        if self.is_image:
            return {"image": _data_uri(image_png(x.float().clamp(0, 1)))}
        return {"values": [round(v, 5) for v in x.flatten().tolist()]}


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet unless asked
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: dict, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _answer(self, call) -> None:
        try:
            self._json(call())
        except RequestError as err:
            self._json({"error": str(err)}, HTTPStatus.BAD_REQUEST)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        space = self.server.space
        if url.path in STATIC:
            name, content_type = STATIC[url.path]
            body = resources.files("vaekit.view").joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, content_type)
        elif url.path == "/api/info":
            self._answer(space.info)
        elif url.path == "/api/example":
            self._answer(lambda: space.example(_int_param(url.query, "index")))
        else:
            self._json({"error": f"not found: {url.path}"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path != "/api/decode":
            self._json({"error": f"not found: {url.path}"}, HTTPStatus.NOT_FOUND)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._json({"error": "request body too large"}, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return
        raw = self.rfile.read(length)

        def decode():
            try:
                body = json.loads(raw or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise RequestError("the body must be JSON") from None
            return self.server.space.decode(body)

        self._answer(decode)


def _int_param(query: str, name: str) -> int:
    values = parse_qs(query).get(name)
    try:
        return int(values[0])
    except (TypeError, ValueError):
        raise RequestError(f"expected ?{name}=<integer>") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    space: LatentSpace
    verbose: bool


class Explorer:
    """The explorer's HTTP server. ``Explorer(run_dir).start()`` serves in a background thread
    (``port=0`` picks a free port; see :attr:`url`) until :meth:`stop`; :meth:`serve_forever`
    serves in the calling thread. Without ``model``/``test_x`` the run's model and test split
    are loaded (:func:`vaekit.load`)."""

    def __init__(self, run_dir: str | Path, *, model=None, test_x: torch.Tensor | None = None,
                 test_labels: torch.Tensor | None = None, host: str = "127.0.0.1", port: int = 0,
                 verbose: bool = False) -> None:
        run_dir = Path(run_dir)
        is_image = class_names = None
        if model is None or test_x is None:
            from ..run import load

            run = load(run_dir)
            model = run.model if model is None else model
            if test_x is None:
                test_x, test_labels = run.split("test")
            is_image, class_names = run.data.is_image, run.data.class_names
        self.space = LatentSpace(model, test_x, test_labels, name=run_dir.resolve().name,
                                 is_image=is_image, class_names=class_names)
        try:
            self.server = _Server((host, port), _Handler)
        except OSError as err:
            raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror}); "
                              "pick another --port (0 picks a free one)") from None
        self.server.space = self.space
        self.server.verbose = verbose
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def start(self) -> "Explorer":
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="vaekit-explorer")
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self.server.serve_forever()
        finally:
            self.server.server_close()

    def stop(self) -> None:
        if self.thread is not None:  # shutdown() waits for serve_forever, so only when running
            self.server.shutdown()
            self.thread.join()
            self.thread = None
        self.server.server_close()

    def __enter__(self) -> "Explorer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
