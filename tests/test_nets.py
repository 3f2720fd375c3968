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
