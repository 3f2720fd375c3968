"""Figures and the latent walks behind them: projections against an SVD-free construction,
Gaussian quantiles against scipy, traversals and the manifold against direct decodes."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import norm

from vaekit.config import ModelConfig
from vaekit.families import build_model
from vaekit.view.plots import (figure_png, gaussian_quantiles, kl_bars, labelled_grid, latent_map,
                          learning_curves, manifold_images, new_figure, project_2d,
                          traversal_images, traversal_order)


def tiny_model(latent_dim=2, data_shape=(1, 8, 8)):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(16,), latent_dim=latent_dim, likelihood="bernoulli")
    return build_model(cfg, data_shape).eval()


def png_size(png: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    image.load()
    return image.size


def test_figure_png_has_the_requested_pixel_size():
    fig = new_figure(3, 2)
    fig.add_subplot().plot([0, 1], [1, 0])
    assert png_size(figure_png(fig)) == (300, 200)


def test_two_latent_dimensions_are_shown_as_they_are():
    z = np.random.default_rng(0).normal(size=(50, 2))
    p = project_2d(z)
    np.testing.assert_allclose(p.points, z)
    assert "z1, z2" in p.name


def test_pca_recovers_a_plane_hidden_in_five_dimensions():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(5, 2)))  # orthonormal columns u1, u2
    a, b = 5 * rng.normal(size=200), 2 * rng.normal(size=200)
    offset = rng.normal(size=5)
    z = offset + np.outer(a, basis[:, 0]) + np.outer(b, basis[:, 1])
    p = project_2d(z)
    assert p.name.startswith("PCA") and "100% of variance" in p.name
    # the first component follows the large-variance direction (up to sign), the second the other
    assert abs(np.corrcoef(p.points[:, 0], a)[0, 1]) > 0.99
    assert abs(np.corrcoef(p.points[:, 1], b)[0, 1]) > 0.99
    # the map back to latent space (used by the explorer's clicks) is exact for a plane
    np.testing.assert_allclose(p.mean + p.points @ p.components, z, atol=1e-9)


def test_gaussian_quantiles_match_scipy():
    np.testing.assert_allclose(gaussian_quantiles(7).numpy(), norm.ppf(np.linspace(0.05, 0.95, 7)),
                               atol=1e-5)


def test_traversal_order_puts_high_kl_first():
    assert traversal_order([0.1, 2.0, 0.0, 1.0], 4) == [1, 3, 0, 2]
    assert traversal_order(None, 3) == [0, 1, 2]


def test_a_dimension_the_decoder_ignores_gives_a_constant_traversal_row():
    model = tiny_model(latent_dim=3)
    first = model.decoder.net.layers[0]
    with torch.no_grad():
        first.weight[:, 1] = 0  # z2 no longer reaches the decoder
    values = torch.linspace(-3, 3, 5)
    z = torch.tensor([0.3, -0.2, 0.5])
    images = traversal_images(model, z, [0, 1], values).reshape(2, 5, 1, 8, 8)
    assert images[1].std(0).max() < 1e-6  # row of z2: the same image five times
    assert images[0].std(0).max() > 1e-3  # row of z1: changes
    expected = model.decode(torch.tensor([0.3, -0.2, 0.5]).repeat(5, 1).index_put_(
        (torch.arange(5), torch.zeros(5, dtype=torch.long)), values)).mean
    torch.testing.assert_close(images[0], expected)


def test_manifold_rows_run_from_high_to_low_z2_and_columns_along_z1():
    model = tiny_model(latent_dim=2)
    q = gaussian_quantiles(4)
    images = manifold_images(model, 4)
    assert images.shape == (16, 1, 8, 8)
    top_right = model.decode(torch.stack([q[-1], q[-1]])[None]).mean[0]
    bottom_left = model.decode(torch.stack([q[0], q[0]])[None]).mean[0]
    torch.testing.assert_close(images[3], top_right)
    torch.testing.assert_close(images[12], bottom_left)
    with pytest.raises(ValueError, match="latent_dim 2"):
        manifold_images(tiny_model(latent_dim=3))


def test_learning_curves_plot_train_and_validation_of_every_term():
    history = [{"epoch": e, "train_elbo": -10.0 + e, "val_elbo": -11.0 + e,
                "train_reconstruction": -9.0 + e, "val_reconstruction": -9.5 + e,
                "train_kl": 1.0 * e, "val_kl": 1.1 * e} for e in (1, 2, 3)]
    fig = learning_curves(history)
    axes = fig.get_axes()
    assert len(axes) == 3
    for ax, key in zip(axes, ("elbo", "reconstruction", "kl")):
        train, val = ax.get_lines()
        assert list(train.get_xdata()) == [1, 2, 3]
        assert list(train.get_ydata()) == [h[f"train_{key}"] for h in history]
        assert list(val.get_ydata()) == [h[f"val_{key}"] for h in history]
    assert png_size(figure_png(fig)) == (1200, 340)


def test_latent_map_names_projection_and_classes():
    z = np.random.default_rng(1).normal(size=(60, 4))
    labels = np.arange(60) % 3
    fig = latent_map(project_2d(z), labels, class_names=["cat", "dog", "eel"])
    ax = fig.get_axes()[0]
    assert "PCA" in ax.get_title() and ax.get_xlabel() == "PC 1"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cat", "dog", "eel"]
    png_size(figure_png(fig))


def test_kl_bars_show_each_dimension():
    fig = kl_bars([0.5, 0.0, 2.0])
    ax = fig.get_axes()[0]
    assert [p.get_height() for p in ax.patches] == [0.5, 0.0, 2.0]
    assert "2.50" in ax.get_title()


def test_labelled_grid_places_labels_at_image_centres():
    images = torch.rand(6, 1, 8, 8)
    fig = labelled_grid(images, 3, row_labels=["a", "b"], col_labels=["x", "y", "z"])
    ax = fig.get_axes()[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    # padding 2, images 8 wide: centres at 2 + 3.5, 12 + 3.5, 22 + 3.5
    np.testing.assert_allclose(ax.get_xticks(), [5.5, 15.5, 25.5])
