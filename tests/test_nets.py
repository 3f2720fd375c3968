import pytest
import torch

from vaekit.nets import MLP, ConvDecoderNet, ConvEncoderNet, downsampled_sizes


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32), (1, 28, 20), (2, 25, 13), (1, 5, 5)])
def test_conv_pair_maps_any_image_shape(shape):
    enc, dec = ConvEncoderNet(shape, 6), ConvDecoderNet(3, shape)
    x = torch.randn(4, *shape)
    assert enc(x).shape == (4, 6)
    assert dec(torch.randn(2, 4, 3)).shape == (2, 4, *shape)  # extra leading sample axis kept


def test_downsampling_halves_until_about_four():
    assert downsampled_sizes(28, 28) == [(28, 28), (14, 14), (7, 7), (4, 4)]
    assert downsampled_sizes(8, 8) == [(8, 8), (4, 4)]
    assert downsampled_sizes(5, 5) == [(5, 5)]


def test_mlp_flattens_and_reshapes():
    m = MLP((1, 8, 8), (2, 5), [16, 16])
    x = torch.randn(3, 7, 1, 8, 8)
    assert m(x).shape == (3, 7, 2, 5)
    torch.testing.assert_close(m(x)[1, 2], m(x[1, 2:3])[0])  # no mixing across the batch
    assert m(x[:0]).shape == (0, 7, 2, 5)  # an empty batch keeps its shape


def test_gated_dense_layers_compute_value_times_sigmoid_gate():
    from torch import nn

    from vaekit.nets import MLP, GatedDense

    torch.manual_seed(0)
    mlp = MLP((5,), (3,), [4, 6], gated=True)
    gated = [m for m in mlp.layers if isinstance(m, GatedDense)]
    assert len(gated) == 2 and not any(isinstance(m, nn.ReLU) for m in mlp.layers)
    x = torch.randn(7, 5)
    h = x
    for layer in gated:  # (W h + b) * sigmoid(V h + c), written out
        h = (h @ layer.value.weight.T + layer.value.bias) * torch.sigmoid(
            h @ layer.gate.weight.T + layer.gate.bias)
    last = mlp.layers[-1]
    torch.testing.assert_close(mlp(x), h @ last.weight.T + last.bias)


def test_gated_model_trains_and_conv_gated_is_refused():
    from vaekit.config import ModelConfig
    from vaekit.families import build_model
    from vaekit.nets import GatedDense
    from vaekit.objectives import elbo

    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(8,), latent_dim=2, likelihood="bernoulli",
                                    gated=True, prior="vamp", prior_components=3), (1, 4, 4))
    assert any(isinstance(m, GatedDense) for m in model.modules())
    x = torch.rand(6, 1, 4, 4).bernoulli()
    loss = -elbo(model, x).mean()
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="gated layers"):
        ModelConfig(arch="conv", gated=True)


def test_he_init_draws_weights_with_variance_two_over_fan_in():
    from vaekit.nets import INITIALIZATIONS

    torch.manual_seed(0)
    net = MLP((400,), (300,), [500])
    INITIALIZATIONS["he"](net)
    first, last = net.layers[0].weight, net.layers[-1].weight
    # 200,000 and 150,000 draws: the sample variance is within 2% of 2 / fan_in
    assert abs(first.var().item() / (2 / 400) - 1) < 0.02
    assert abs(last.var().item() / (2 / 500) - 1) < 0.02
    assert abs(first.mean().item()) < 1e-3
