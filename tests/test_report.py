"""report.html: every section present, images are valid PNGs of the expected sizes, nothing is
fetched from outside, run text is escaped, per-dimension KLs add up to the closed-form KL, and
the page renders in a real browser without console errors."""

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from vaekit.cli import main
from vaekit.config import RunConfig, merge
from vaekit.evaluation import evaluate_elbo
from vaekit.evaluation import latent_summary
from vaekit.view.report import write_report

IMAGE_SECTIONS = ["samples", "reconstructions", "interpolations", "traversals"]
ALWAYS = ["metrics", "latent-map", "curves", "kl-per-dim", "config"]


def tiny(latent_dim, epochs=2, **train):
    return merge(RunConfig(), {"train": {"epochs": epochs, "batch_size": 128, **train},
                               "model": {"hidden": (32,), "latent_dim": latent_dim,
                                         "likelihood": "bernoulli"}})


def quiet(config, run_dir):
    return vaekit.train(config, run_dir, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    """A two-epoch digits run with latent_dim 2; training writes its report."""
    return quiet(tiny(2), tmp_path_factory.mktemp("report") / "run2")


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    """latent_dim 4, trained without a report (written by the tests)."""
    return quiet(tiny(4, report=False), tmp_path_factory.mktemp("report") / "run4")


def sections(page: str) -> list[str]:
    return re.findall(r'<section id="([\w-]+)"', page)


def embedded_pngs(page: str) -> list[Image.Image]:
    images = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "PNG"
        image.load()  # decodes the whole stream: fails on a truncated or corrupt PNG
        images.append(image)
    return images


def test_training_writes_a_report_with_every_section(run2):
    page = (run2 / "report.html").read_text()
    assert sorted(sections(page)) == sorted(ALWAYS + IMAGE_SECTIONS + ["manifold"])
    images = embedded_pngs(page)
    assert len(images) == len(page.split("<img")) - 1 == 8  # every <img> is an embedded PNG
    # samples: 8 x 8 grid of 8x8 digits with 2-pixel padding, enlarged 56 // 8 = 7 times
    side = (8 * (8 + 2) + 2) * 7
    assert (side, side) in [im.size for im in images]
    assert (1200, 340) in [im.size for im in images]  # learning curves, 12 x 3.4 in at 100 dpi
    assert all(im.width >= 200 and im.height >= 150 for im in images)
    assert "latent coordinates z1, z2" in page


def test_report_is_self_contained(run2):
    page = (run2 / "report.html").read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # only data URIs and in-page links
    assert "<script" not in page and "@import" not in page and "url(" not in page


def test_report_without_manifold_for_latent_dim_4_and_pca_map(run4):
    assert not (run4 / "report.html").exists()
    path = write_report(run4)  # loads the model and the test split itself
    page = path.read_text()
    assert sorted(sections(page)) == sorted(ALWAYS + IMAGE_SECTIONS)
    assert "PCA of the posterior means" in page
    assert len(embedded_pngs(page)) == 7


def test_kl_per_dimension_adds_up_to_the_closed_form_kl(run4):
    run = vaekit.load(run4)
    model = run.model
    x, _ = run.split()
    summary = latent_summary(model, x, batch_size=50)
    assert summary.means.shape == (len(x), 4)
    kl_total = evaluate_elbo(model, x)["kl"]  # closed-form Gaussian KL, mean over examples
    assert float(summary.kl_per_dim.sum()) == pytest.approx(kl_total, rel=1e-5)
    assert (summary.kl_per_dim >= 0).all()


def test_cli_report_shows_extra_diagnostics_escaped(run4, capsys):
    (run4 / "evaluation.json").write_text(json.dumps(
        {"log_likelihood": -31.25, "bits_per_dim": 0.7045, "active_units": 3,
         "<script>alert(1)</script>": 1.5}))
    assert main(["report", str(run4)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (run4 / "report.html").read_text()
    assert re.search(r"log-likelihood</td><td class=\"num\">-31.25<", page)
    assert re.search(r"active units</td><td class=\"num\">3<", page)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_cli_report_on_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_tabular_run_report_has_curves_and_map_but_no_pictures(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(240, 5)) @ rng.normal(size=(5, 6))
    lines = ["a,b,c,d,e,f,label"] + [",".join(f"{v:.4f}" for v in row) + f",{i % 3}"
                                     for i, row in enumerate(table)]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    cfg = merge(RunConfig(), {"data": {"name": str(tmp_path / "table.csv")},
                              "train": {"epochs": 2, "batch_size": 64},
                              "model": {"hidden": (16,), "latent_dim": 3}})
    run = quiet(cfg, tmp_path / "run")
    page = (run / "report.html").read_text()
    assert sorted(sections(page)) == sorted(ALWAYS)
    assert len(embedded_pngs(page)) == 3  # curves, latent map, KL bars


@pytest.mark.browser
def test_report_renders_in_chromium_without_console_errors(run2, tmp_path):
    from browser import browser_page

    errors = []
    with browser_page(errors) as page:
        page.goto((run2 / "report.html").as_uri())
        page.wait_for_load_state("load")
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        heights = page.evaluate("[...document.querySelectorAll('section')].map(s => s.offsetHeight)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert errors == []
    assert broken == 0
    assert len(heights) == 10 and min(heights) > 50
    assert (tmp_path / "report.png").stat().st_size > 10_000
