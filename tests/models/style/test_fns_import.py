"""The pytorch/examples fast_neural_style importer reproduces their TransformerNet's forward."""

import pytest
import torch
from torch import nn

from models.common.errors import CheckpointError
from models.style.checkpoint import load_stylizer
from models.style.fns_import import import_fast_neural_style, stylizer_from_fast_neural_style
from models.style.stylizer import one_hot


# A minimal copy of pytorch/examples fast_neural_style/neural_style/transformer_net.py (the older variant whose
# UpsampleConvLayer holds an nn.Upsample module): the layout their .pth files have.
class ConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        return out + residual


class UpsampleConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        if upsample:
            self.upsample_layer = nn.Upsample(mode="nearest", scale_factor=upsample)
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        if self.upsample:
            x = self.upsample_layer(x)
        return self.conv2d(self.reflection_pad(x))


class TransformerNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


@pytest.fixture
def theirs():
    torch.manual_seed(0)
    net = TransformerNet().eval()
    with torch.no_grad():  # fresh norms are the identity; random scale/shift make the mapping matter
        for module in net.modules():
            if isinstance(module, nn.InstanceNorm2d):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
        net.deconv3.conv2d.weight.mul_(100)  # outputs on the 0-255 scale, like a trained network's
    return net


def old_style_state_dict(net):
    """Their state_dict plus the stray running statistics that files saved before PyTorch 0.4 carry."""
    state = dict(net.state_dict())
    for name, module in net.named_modules():
        if isinstance(module, nn.InstanceNorm2d):
            state[f"{name}.running_mean"] = torch.randn(module.num_features)
            state[f"{name}.running_var"] = torch.rand(module.num_features)
    return state


def test_imported_checkpoint_reproduces_their_forward(theirs, tmp_path):
    state = old_style_state_dict(theirs)
    assert any(key.endswith("running_mean") for key in state)
    path = tmp_path / "mosaic.pth"
    torch.save(state, path)

    import_fast_neural_style(str(path), str(tmp_path / "mosaic.safetensors"))
    ours, info = load_stylizer(str(tmp_path / "mosaic.safetensors"))

    assert info.style_names == ["mosaic"] and info.config.width == 1.0 and info.config.num_residual == 5
    pixels = torch.rand(2, 3, 40, 52) * 255  # their forward takes and returns the 0-255 scale
    with torch.no_grad():
        expected = theirs(pixels)
        actual = ours(pixels / 255, one_hot([0, 0], 1)) * 255
    assert expected.std() > 20  # a real image-scale output, not a near-zero one that anything would match
    torch.testing.assert_close(actual, expected, atol=0.05, rtol=1e-4)


def test_instance_norm_rows_come_from_their_affine_parameters(theirs):
    ours = stylizer_from_fast_neural_style(theirs.state_dict())
    assert torch.equal(ours.in3.weight, theirs.in3.weight[None])
    assert torch.equal(ours.res2.in1.bias, theirs.res2.in1.bias[None])


def test_other_layouts_are_rejected_clearly(theirs, tmp_path):
    state = theirs.state_dict()
    del state["res3.conv2.conv2d.weight"]
    with pytest.raises(CheckpointError, match=r"missing: res3\.conv2\.conv2d\.weight"):
        stylizer_from_fast_neural_style(state)

    vgg_like = {"features.0.weight": torch.zeros(64, 3, 3, 3)}
    with pytest.raises(CheckpointError, match="not a fast_neural_style TransformerNet"):
        stylizer_from_fast_neural_style(vgg_like)

    pickled_module = tmp_path / "whole_model.pth"
    torch.save(theirs, pickled_module)  # a pickled nn.Module needs code execution to load: refused
    with pytest.raises(CheckpointError, match="cannot read .* as a state_dict"):
        import_fast_neural_style(str(pickled_module), str(tmp_path / "out.safetensors"))
